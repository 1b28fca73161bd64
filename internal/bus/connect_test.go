package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// startServer runs an in-process nats-server with opts on a free port.
func startServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// writePEM writes blocks to a file in dir.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testPKI makes a CA and, signed by it, a certificate for 127.0.0.1 (used
// by the server and the client alike); it returns the files.
func testPKI(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "patchline test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	return writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER), writePEM(t, dir, "cert.pem", "CERTIFICATE", leafDER), writePEM(t, dir, "key.pem", "EC PRIVATE KEY", keyDER)
}

// testCreds sets up operator mode (JWT accounts) on opts and returns a
// .creds file of a user allowed in.
func testCreds(t *testing.T, opts *server.Options) string {
	t.Helper()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	accClaims := jwt.NewAccountClaims(accPub)
	accJWT, err := accClaims.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	opts.TrustedOperators, opts.AccountResolver = []*jwt.OperatorClaims{opClaims}, resolver
	p := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(p, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConnectAuth connects to real servers that want a token, a .creds
// file (JWT), or mutual TLS, as nats.token, nats.creds and nats.tls say;
// wrong or missing credentials fail at once with the server's reason,
// instead of retrying forever.
func TestConnectAuth(t *testing.T) {
	ca, cert, key := testPKI(t)
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	tokenURL := startServer(t, &server.Options{Authorization: "s3cret"})
	credsOpts := &server.Options{}
	creds := testCreds(t, credsOpts)
	credsURL := startServer(t, credsOpts)
	tlsURL := startServer(t, &server.Options{TLS: true, TLSConfig: tlsCfg, TLSVerify: true})

	for _, c := range []struct {
		name    string
		url     string
		cfg     config.NATS
		wantErr string
	}{
		{"token", tokenURL, config.NATS{Token: "s3cret"}, ""},
		{"wrong token", tokenURL, config.NATS{Token: "guess"}, "authorization violation"},
		{"no token", tokenURL, config.NATS{}, "authorization violation"},
		{"creds", credsURL, config.NATS{Creds: creds}, ""},
		{"no creds", credsURL, config.NATS{}, "authorization violation"},
		{"missing creds file", credsURL, config.NATS{Creds: filepath.Join(t.TempDir(), "nope.creds")}, "no such file"},
		{"mutual tls", tlsURL, config.NATS{TLS: config.TLS{CA: ca, Cert: cert, Key: key}}, ""},
		{"tls without client cert", tlsURL, config.NATS{TLS: config.TLS{CA: ca}}, "tls"},
		{"tls, unknown CA", tlsURL, config.NATS{}, "certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			nc, err := Connect(c.cfg, c.url, "test", discard())
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				if err := nc.Publish("x", []byte("y")); err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("connected, want an error with %q", c.wantErr)
			}
			if !strings.Contains(strings.ToLower(err.Error()), c.wantErr) {
				t.Errorf("error %q, want one with %q", err, c.wantErr)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("failed after %v, want at once", took)
			}
		})
	}
}

// TestConnectBeforeServer: with nothing listening yet, Connect returns a
// connection that connects once the server is up, and says so in the log;
// meanwhile a stage on it is not confirmed ready.
func TestConnectBeforeServer(t *testing.T) {
	port := testenv.FreePort(t, "127.0.0.1")
	var logs testenv.Buffer
	nc, err := Connect(config.NATS{}, fmt.Sprintf("nats://127.0.0.1:%d", port), "test", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}
	var r Readiness
	if r.SetReady(nc) {
		t.Error("SetReady confirmed subscriptions with no server")
	}
	select {
	case <-r.Ready():
	default:
		t.Error("Ready not closed after SetReady")
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	testenv.WaitFor(t, "a connection after the server started", 10*time.Second, nc.IsConnected)
	testenv.WaitFor(t, `"nats connected" logged`, 5*time.Second, func() bool { return strings.Contains(logs.String(), "nats connected") })
	if !r.SetReady(nc) {
		t.Error("SetReady not confirmed once connected")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestReconnectOutlastsRefusedCredentials: a server back for a while with
// other credentials does not end the connection for good (the client gave
// up after two refusals, leaving a stage that never reconnected); once the
// server takes the credentials again, the connection is back.
func TestReconnectOutlastsRefusedCredentials(t *testing.T) {
	port := testenv.FreePort(t, "127.0.0.1")
	start := func(token string) *server.Server {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, Authorization: token, NoSigs: true, NoLog: true})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(5 * time.Second) {
			t.Fatal("server not ready")
		}
		return srv
	}
	srv := start("s3cret")
	var logs testenv.Buffer
	nc, err := Connect(config.NATS{Token: "s3cret"}, fmt.Sprintf("nats://127.0.0.1:%d", port), "test", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	srv = start("other")
	testenv.WaitFor(t, "refusals of the credentials", 10*time.Second, func() bool { return strings.Contains(logs.String(), "refusals=2") })
	time.Sleep(time.Second) // several more refusals
	srv.Shutdown()
	srv.WaitForShutdown()
	srv = start("s3cret")
	defer srv.Shutdown()
	testenv.WaitFor(t, "the connection back", 10*time.Second, nc.IsConnected)
	if nc.IsClosed() {
		t.Fatal("connection closed")
	}
}

// fakeServer speaks just enough of the NATS protocol, as nats-server
// version would, for a client to connect; it returns its URL.
func fakeServer(t *testing.T, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				fmt.Fprintf(conn, "INFO {\"server_id\":\"fake\",\"version\":%q,\"proto\":1,\"max_payload\":1048576,\"headers\":true}\r\n", version)
				buf := make([]byte, 4096)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					if strings.Contains(string(buf[:n]), "PING") {
						_, _ = conn.Write([]byte("PONG\r\n"))
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// TestConnectRefusesOldServers: a server older than 2.10 (Debian
// bookworm's package is 2.9) is refused at the connect, saying which
// version is needed and how to get it, instead of failing later on a
// stream setting it does not know; 2.10 and newer pass.
func TestConnectRefusesOldServers(t *testing.T) {
	_, err := Connect(config.NATS{}, fakeServer(t, "2.9.10"), "test", discard())
	if err == nil || !strings.Contains(err.Error(), "nats-server 2.9.10; patchline needs 2.10 or newer") || !strings.Contains(err.Error(), "go install") {
		t.Errorf("connect to 2.9.10: %v, want it refused with the way out", err)
	}
	// A server that comes up after the stage (Connect's retry path) is
	// refused where the stage sets up its buckets.
	nc, err := nats.Connect(fakeServer(t, "2.9-beta"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	called := false
	err = SetupRetry(context.Background(), js, func() error { called = true; return nil })
	if err == nil || called || !strings.Contains(err.Error(), "nats-server 2.9-beta; patchline needs 2.10 or newer") {
		t.Errorf("setup against 2.9-beta: %v (set up: %v), want it refused first", err, called)
	}
	for v, want := range map[string][2]int{"2.9.10": {2, 9}, " v2.10.0-beta.1": {2, 10}, "2.9-beta": {2, 9}} {
		if major, minor, ok := majorMinor(v); !ok || major != want[0] || minor != want[1] {
			t.Errorf("majorMinor(%q) = %d, %d, %v", v, major, minor, ok)
		}
	}
	for _, v := range []string{"2.10.0", "2.15.2", "3.0.0-beta"} {
		nc, err := Connect(config.NATS{}, fakeServer(t, v), "test", discard())
		if err != nil {
			t.Errorf("connect to %s: %v", v, err)
			continue
		}
		nc.Close()
	}
}
