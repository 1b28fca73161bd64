package bus

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// A NATS URL's password (or token as the user) stays out of what Connect
// logs and returns, for every server of a list.
func TestConnectRedactsTheURL(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1")) // nothing answers: Connect warns and retries in the background
	urls := "nats://u:pa55word@" + addr + ", nats://t0ken@" + addr
	var logs bytes.Buffer
	nc, err := Connect(config.NATS{}, urls, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	got := logs.String()
	if !strings.Contains(got, "nats not reachable yet") || strings.Contains(got, "pa55word") || strings.Contains(got, "t0ken") {
		t.Errorf("log:\n%s\nwant the warning, without the password or token", got)
	}
	if want := "nats://u:xxxxx@" + addr + ",nats://xxxxx@" + addr; RedactURLs(urls) != want {
		t.Errorf("RedactURLs(%q) = %q, want %q", urls, RedactURLs(urls), want)
	}
}
