package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SetupWait is how long a stage waits at start for JetStream to create or
// open its buckets: a cluster that is still forming, or a server that is
// restarting, answers "temporarily unavailable" for a few seconds.
const SetupWait = time.Minute

// Transient reports whether err from a JetStream call means "no answer
// now" rather than a definite failure: a stream without a leader (a
// cluster electing one after losing a server, or still forming), no
// responders, a timeout, a reconnecting connection. ctx is the call's:
// its own end is not transient.
func Transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if notEnabled(err) {
		return false // a 503 too, but one that waiting does not cure
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), // disconnected, without a reconnect buffer
		errors.Is(err, context.DeadlineExceeded):     // the client's own request timeout
		return true
	case errors.As(err, &apiErr):
		// 503: e.g. "JetStream system temporarily unavailable". No peers
		// for placement because one is offline: a forming cluster whose
		// last server the leader has not heard from yet, or one that lost
		// a server, which comes back or is replaced.
		return apiErr.Code == 503 ||
			apiErr.ErrorCode == jsClusterNoPeers && strings.Contains(apiErr.Description, "peer offline")
	}
	return false
}

// jsClusterNoPeers is nats-server's error code for "no suitable peers for
// placement" (JSClusterNoPeersErrF), with the reasons in its description.
const jsClusterNoPeers = 10005

// notEnabled reports whether err says the server or the account has no
// JetStream.
func notEnabled(err error) bool {
	return errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// Retry runs op until it succeeds, fails definitely (not Transient), ctx
// ends or wait has passed, and returns op's last error.
func Retry(ctx context.Context, wait time.Duration, op func() error) error {
	deadline := time.Now().Add(wait)
	for {
		err := op()
		if !Transient(ctx, err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// SetupRetry is Retry for creating or opening a stage's buckets at start,
// for up to SetupWait. A server without JetStream fails at once: some
// calls to it get "no responders", which on a forming cluster would be
// worth waiting out, so the account is asked which it is.
//
// Time without a connection does not count: a stage started before its
// NATS server (systemd starting both at once, the server restarting)
// waits for it for as long as it takes. A server older than 2.10 fails it
// (checkServerVersion).
func SetupRetry(ctx context.Context, js jetstream.JetStream, op func() error) error {
	return setupRetryFor(ctx, js, SetupWait, op)
}

// setupRetryFor is SetupRetry giving JetStream wait (connected) to answer.
func setupRetryFor(ctx context.Context, js jetstream.JetStream, wait time.Duration, op func() error) error {
	nc := js.Conn()
	for {
		if err := waitConnected(ctx, nc); err != nil {
			return err
		}
		// Also where NATS came up after the stage (Connect checks only
		// a server there at once).
		if err := checkServerVersion(nc); err != nil {
			return err
		}
		err := setupRetry(ctx, js, wait, op)
		if err != nil && ctx.Err() == nil && !nc.IsConnected() && !nc.IsClosed() {
			continue // the connection went while it tried: wait for it again
		}
		return err
	}
}

// waitConnected returns once nc is connected, or ctx's error, or why nc
// never will be.
func waitConnected(ctx context.Context, nc *nats.Conn) error {
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return nats.ErrConnectionClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

func setupRetry(ctx context.Context, js jetstream.JetStream, wait time.Duration, op func() error) error {
	asked := false
	return Retry(ctx, wait, func() error {
		err := op()
		if errors.Is(err, nats.ErrNoResponders) && !asked {
			asked = true
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, aerr := js.AccountInfo(actx)
			cancel()
			if notEnabled(aerr) {
				return fmt.Errorf("%w (%w)", aerr, err)
			}
		}
		return err
	})
}

// EnsureKV creates the KV bucket cfg, or updates it to cfg, waiting out a
// JetStream that is not ready yet (SetupRetry).
func EnsureKV(ctx context.Context, nc *nats.Conn, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var kv jetstream.KeyValue
	err = SetupRetry(ctx, js, func() (err error) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// WatchKV watches every key of kv (opts: jetstream.UpdatesOnly…) and calls
// f with each update, nil marking the end of the initial values, until
// ctx ends (nil) or the watcher does (an error: NATS restarted, watch
// again).
func WatchKV(ctx context.Context, kv jetstream.KeyValue, f func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	w, err := kv.WatchAll(ctx, opts...)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			f(e)
		}
	}
}

// WatchStreams returns an error once one of streams (JetStream stream
// names: a KV bucket is KV_<bucket>, an object store OBJ_<bucket>) is
// found missing twice in a row, every apart, while nc is connected; nil
// when ctx ends. Stages make their buckets and streams at start: a server
// that comes back without its JetStream data (restarted on an empty store)
// would leave them failing forever, however their calls retry. A stage
// that stops with this error is restarted by its supervisor (systemd's
// Restart=always in deploy/), and makes them again.
func WatchStreams(ctx context.Context, nc *nats.Conn, streams []string, every time.Duration) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	missing := map[string]int{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !nc.IsConnected() {
			continue
		}
		for _, name := range streams {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := js.Stream(cctx, name)
			cancel()
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				if missing[name]++; missing[name] >= 2 {
					return fmt.Errorf("JetStream stream %s is gone (did the NATS server lose its JetStream data?): stopping, so that a restart makes it again", name)
				}
			case err == nil:
				missing[name] = 0
			} // other errors (a timeout, no leader yet) say nothing either way
		}
	}
}

// jsInsufficientResources is JetStream's error code for a stream or bucket
// that its server's storage limit cannot take.
const jsInsufficientResources jetstream.ErrorCode = 10047

// jsStoreCreate is JetStream's error code for a stream or bucket whose
// files could not be created ("error creating store for stream").
const jsStoreCreate jetstream.ErrorCode = 10049

// ExplainStorage adds to JetStream's "insufficient storage resources"
// refusal (and to its "error creating store for stream") why it comes and
// what to do: a server takes for JetStream at
// most 75% of the disk space free where it stores (unless configured),
// and a stream counts its whole max_bytes against that from its start.
// storeDir is the embedded server's store ("" for another server);
// streamBytes is sink.stream.max_bytes. Other errors come back as they are.
func ExplainStorage(err error, storeDir string, streamBytes int64) error {
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jsInsufficientResources && api.ErrorCode != jsStoreCreate {
		return err
	}
	where := "the NATS server's JetStream store_dir (or raise its max_file_store)"
	if storeDir != "" {
		where = storeDir
		var st syscall.Statfs_t
		if syscall.Statfs(storeDir, &st) == nil {
			if free := st.Bavail * uint64(st.Bsize); free < 1<<20 {
				where += fmt.Sprintf(" (%d KiB free)", free>>10)
			} else {
				where += fmt.Sprintf(" (%d MiB free)", free>>20)
			}
		}
	}
	if api.ErrorCode == jsStoreCreate {
		return fmt.Errorf("%w: nats-server could not create the stream's files in %s: the disk is full, or the process is out of open files (ulimit -n); its log line says which", err, where)
	}
	return fmt.Errorf("%w: JetStream reserves each stream's whole max_bytes (sink.stream.max_bytes is %d MiB) out of at most 75%% of the disk space free at the server's start; free space in %s, or lower sink.stream.max_bytes",
		err, streamBytes>>20, where)
}
