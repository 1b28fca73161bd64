// Command patchline is the streaming video analysis pipeline.
package main

import (
	"os"

	"github.com/patchline/patchline/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
