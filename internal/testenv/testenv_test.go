package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// TestFreePortIsReserved checks that FreePort's port lies outside the
// kernel's ephemeral range and that no other test (in any process: the lock
// is an flock, which a second open of the file meets as another process
// would) can take it until the test holding it ends.
func TestFreePortIsReserved(t *testing.T) {
	if lo, hi := reservedPorts(); hi <= lo {
		t.Skipf("no ports below the kernel's ephemeral range (from %d) to reserve", hi)
	}
	var port int
	t.Run("hold", func(t *testing.T) {
		port = FreePort(t, "127.0.0.1")
		if lo, hi := reservedPorts(); port < lo || port >= hi {
			t.Fatalf("port %d is outside %d-%d", port, lo, hi-1)
		}
		if lockable(t, port) {
			t.Fatalf("port %d can be reserved again while a test holds it", port)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("the test cannot listen on its own port: %v", err)
		}
		ln.Close()
	})
	if !lockable(t, port) {
		t.Errorf("port %d is still reserved after the test that held it ended", port)
	}
}

// lockable reports whether port's reservation could be taken now.
func lockable(t *testing.T, port int) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(os.TempDir(), "patchline-test-ports", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
