// Command patchline is the streaming video analysis pipeline.
package main

import (
	"os"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/cli"
)

func main() {
	bus.TuneGC()
	os.Exit(cli.Main(os.Args[1:]))
}
