package bus

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/media"
	"github.com/patchline/patchline/internal/telemetry"
)

// MaxPayload is the largest message the embedded server accepts. Frames carry
// model-resolution tokens only (224×224×3 ≈ 150 KB, 640×640×3 ≈ 1.2 MB), so 4 MB
// leaves room without inviting raw full-resolution frames onto the bus.
const MaxPayload = 4 << 20

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv   *server.Server
	lock  *os.File // held on the store directory while the server runs
	store string   // its JetStream directory

	mu        sync.Mutex
	sickSince time.Time // since when Healthy has seen the check fail, other than by a write error
}

// sickFor is how long the embedded server's health check must fail
// (other than by a write error) before Healthy says so.
const sickFor = 5 * time.Second

// lockStore takes an exclusive lock on dir for this process. Two servers
// on one JetStream store overwrite each other's files (a second `patchline
// run` on other ports, with the default store_dir, found the first one's
// cameras and reported the bucket corrupt): the second is refused.
func lockStore(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: store %w", err)
	}
	path := filepath.Join(dir, "patchline.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: store lock: %w", err)
	}
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP):
		// A file system without locks (some network ones): run unguarded
		// rather than not at all.
		return f, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		_ = f.Close()
		who := "another process"
		if pid := strings.TrimSpace(string(holder)); pid != "" {
			who = "process " + pid
		}
		return nil, fmt.Errorf("embedded nats: the JetStream store %s is in use by %s (another patchline run?); give this one its own nats.embedded.store_dir", dir, who)
	case err != nil:
		_ = f.Close()
		return nil, fmt.Errorf("embedded nats: store lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// StartEmbedded starts a nats-server listening on cfg.Host:cfg.Port (port -1
// picks a free one) with JetStream storing under cfg.StoreDir. A token
// (nats.token) is then required of every client; without one, any process
// that reaches the port may use it.
func StartEmbedded(cfg config.Embedded, token string, log *slog.Logger) (e *Embedded, err error) {
	var lock *os.File
	if cfg.StoreDir != "" {
		if lock, err = lockStore(cfg.StoreDir); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = lock.Close()
			}
		}()
	}
	opts := &server.Options{
		ServerName:    "patchline-embedded",
		Host:          cfg.Host,
		Port:          cfg.Port,
		JetStream:     true,
		StoreDir:      cfg.StoreDir,
		MaxPayload:    MaxPayload,
		NoSigs:        true,
		Authorization: token,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	fatal := make(chan string, 1)
	srv.SetLoggerV2(&natsLogger{log: log.With("component", "nats-server"), fatal: fatal}, false, false, false)
	go srv.Start()
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(10 * time.Second) }()
	select {
	case ok := <-ready:
		if ok {
			e := &Embedded{srv: srv, lock: lock, store: cfg.StoreDir}
			if js := srv.JetStreamConfig(); e.store == "" && js != nil {
				e.store = js.StoreDir // where nats-server put it
			}
			return e, nil
		}
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s:%d within 10s", cfg.Host, cfg.Port)
	case reason := <-fatal:
		// The server gave up (the port taken, the address not this
		// machine's, the store unusable): say why now, not after the wait.
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: %s (set nats.embedded.host/port, or nats.url for an external server)", cfg.Host, cfg.Port, reason)
	}
}

// URL is the client URL of the embedded server.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Healthy is nil while nats-server's own health check passes: it serves
// clients, JetStream is on, and every stream of its store was recovered
// and can be written. A stream whose store failed to write (ENOSPC: the
// disk filled up) stays failing in nats-server, even once there is space
// again, until the server restarts, while live subjects go on working; so
// an operator learns it here, with what to do, not only from its log.
func (e *Embedded) Healthy() error {
	h := e.srv.Healthz(nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	if h.Error == "" && h.Status == "ok" {
		e.sickSince = time.Time{}
		return nil
	}
	msg := h.Error
	if msg == "" {
		msg = h.Status
	}
	if !strings.Contains(msg, "write error") {
		// Other failures of the check come and go with a stream's
		// creation or deletion (its directory there before it is, or
		// after): only one that lasts counts.
		if e.sickSince.IsZero() {
			e.sickSince = time.Now()
		}
		if time.Since(e.sickSince) < sickFor {
			return nil
		}
		return fmt.Errorf("embedded nats: %s", msg)
	}
	fix := "fix its cause (the error above)"
	switch {
	case strings.Contains(msg, "no space left"), strings.Contains(msg, "quota exceeded"):
		fix = "free space in " + e.store
	case strings.Contains(msg, "file too large"):
		fix = "raise the process's file-size limit (ulimit -f)"
	case strings.Contains(msg, "too many open files"):
		fix = "raise the process's open-files limit (ulimit -n, systemd LimitNOFILE)"
	}
	return fmt.Errorf("embedded nats: %s; nats-server keeps such a stream failing until it restarts: %s, then restart patchline", msg, fix)
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	if e.lock != nil {
		_ = e.lock.Close() // releases the store
		e.lock = nil
	}
}

// Connect dials NATS for a component, reconnecting forever: stages ride out a
// NATS restart instead of exiting, and may start before the server. A
// server that answers but refuses the connection (credentials, TLS) is an
// error at once, naming the server's reason. extra options come last
// (Embedded.InProcess).
func Connect(cfg config.NATS, url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if url == "" {
		return nil, errors.New("nats: no server URL")
	}
	var refused atomic.Uint64        // reconnects refused for the credentials, since the last success
	asyncErrs := &telemetry.Counts{} // async errors by subject and text, since the last reconnect
	opts := []nats.Option{
		nats.Name("patchline-" + name),
		nats.MaxReconnects(-1),
		// A server back with other credentials for a while (a config
		// being rolled out) must not end the connection for good: the
		// client would otherwise give up after two refusals in a row,
		// leaving a live process that never reconnects.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "component", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			refused.Store(0)
			asyncErrs.Reset()
			log.Info("nats reconnected", "component", name, "url", nc.ConnectedUrlRedacted())
			if err := checkServerVersion(nc); err != nil {
				log.Error("nats reconnected to a server too old", "component", name, "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
				// Each reconnect attempt (every 250 ms) is refused: say so
				// the 1st, 2nd, 4th… time.
				if n := refused.Add(1); telemetry.Thinned(n) {
					log.Warn("nats refused the credentials on reconnect; retrying", "component", name, "err", err, "refusals", n)
				}
				return
			}
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			// The same error again and again (a consumer not active, every
			// few seconds through an outage): the 1st, 2nd, 4th… time.
			if n := asyncErrs.Add(subj + "\x00" + err.Error()); telemetry.Thinned(n) {
				log.Warn("nats async error", "component", name, "subject", subj, "err", err, "times", n)
			}
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CA))
	}
	if cfg.TLS.Cert != "" || cfg.TLS.Key != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.Cert, cfg.TLS.Key))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if errors.Is(err, nats.ErrNoServers) {
		// Nothing answered (not started yet, restarting): connect in the
		// background and let the stage wait for it.
		log.Warn("nats not reachable yet; retrying", "component", name, "url", RedactURLs(url), "err", err)
		nc, err = nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true),
			nats.ConnectHandler(func(nc *nats.Conn) {
				log.Info("nats connected", "component", name, "url", nc.ConnectedUrlRedacted())
				if err := checkServerVersion(nc); err != nil { // the stage's setup fails on it (SetupRetry)
					log.Error("nats connected to a server too old", "component", name, "err", err)
				}
			}))...)
	}
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", RedactURLs(url), err)
	}
	if nc.IsConnected() {
		if err := checkServerVersion(nc); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}

// majorMinor reads the major and minor numbers of a server version such as
// "2.9.10", "v2.10.0-beta.1" or "2.9-beta" (the digits each part starts with).
func majorMinor(v string) (major, minor int, ok bool) {
	lead := func(s string) (int, bool) {
		end := 0
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end++
		}
		n, err := strconv.Atoi(s[:end])
		return n, err == nil
	}
	a, b, found := strings.Cut(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".")
	if !found {
		return 0, 0, false
	}
	major, ok1 := lead(a)
	minor, ok2 := lead(b)
	return major, minor, ok1 && ok2
}

// checkServerVersion refuses a server older than 2.10: the annotation
// stream's subject transform and the buckets' settings need it, and an
// older server's refusals do not say so. Debian bookworm's nats-server
// package is 2.9.
func checkServerVersion(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	major, minor, ok := majorMinor(v)
	if !ok || major > 2 || major == 2 && minor >= 10 {
		return nil // newer, or a form not understood: let it try
	}
	return fmt.Errorf("nats: the server at %s is nats-server %s; patchline needs 2.10 or newer (go install github.com/nats-io/nats-server/v2@v2.15.2; Debian bookworm's package is 2.9)",
		nc.ConnectedUrlRedacted(), v)
}

// natsLogger routes nats-server logs into slog.
type natsLogger struct {
	log   *slog.Logger
	fatal chan<- string // the first fatal error, which stops the server
}

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l *natsLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// InProcess is the nats.Option that connects a client in this process to
// the embedded server through memory instead of a loopback socket: no
// syscalls and one copy less per message, which frames (tens to hundreds
// of KB, hundreds a second) notice.
func (e *Embedded) InProcess() nats.Option { return nats.InProcessServer(e.srv) }

// RedactURLs is a NATS server list (comma-separated URLs) fit for a log: a
// password, or a token given as the user, becomes "xxxxx".
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		parts[i] = media.RedactURL(strings.TrimSpace(u))
	}
	return strings.Join(parts, ",")
}
