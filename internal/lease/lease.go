// Package lease shares a set of keys (cameras) among the replicas of one
// stage on the same NATS, so that each key is worked on by one replica at
// a time: decode decodes a camera, generate runs its automatic triggers.
//
// Each replica holds a key while it owns its lease: an entry <key prefix>
// <key> in a KV bucket whose entries expire after the lease TTL, created
// when free and renewed (compare-and-set on its revision) every round.
// Every replica announces itself (replica.<id>, also renewed, holding its
// cap), so each can aim for its share, ceil(keys / replicas), or what the
// replicas' caps let: it takes free keys while it has fewer and gives one
// back per round while it has more. A replica that dies stops renewing;
// within a TTL its keys are free and the others take them. One that stops
// gives them back at once (Leave).
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/telemetry"
)

// Key prefixes in a lease bucket.
const (
	KeyPrefix     = "cam."
	ReplicaPrefix = "replica."
)

// Set is one replica's leases in one bucket. Its methods are not safe for
// concurrent use: one loop (Run) owns it.
type Set struct {
	kv   jetstream.KeyValue
	id   string
	revs map[string]uint64 // key → revision of our lease
	// opTimeout bounds each bucket operation on its own (a third of the
	// TTL), not a round as a whole.
	opTimeout time.Duration
	ttl       time.Duration
	// dropping holds the keys whose Drop runs in the background, each
	// with a channel closed when it returns. A Drop may take long (a
	// camera stopping mid-read waits up to its stall timeout, as long as
	// a TTL by default): the rounds go on renewing the other leases, and
	// this key's own until its Drop is over, so no one else works on it
	// meanwhile.
	dropping map[string]chan struct{}
	// dropped wakes Run when a background Drop returns, to give its
	// lease back at once.
	dropped chan struct{}
	// Cap is the most keys this replica takes (decode.max_cameras); 0, none.
	Cap int
	// short counts the rounds that found keys no replica has room for, to
	// thin the warning.
	short uint64
	// caps are the replicas' caps the last heartbeat saw.
	caps []int
	// failedBeats counts the heartbeats that failed in a row, to thin the
	// warning.
	failedBeats uint64
	// beatAt is when a heartbeat last succeeded: a TTL later, with none
	// since, the leases held have expired in the bucket.
	beatAt time.Time
	// settleUntil: back from an outage longer than the TTL, no free key
	// is taken before it, so that the other replicas' heartbeats are back
	// and this one's share is not all the keys.
	settleUntil time.Time
}

// Open opens (creating or updating) the lease bucket, whose entries live
// ttl, with the given JetStream replicas, for a new replica.
func Open(ctx context.Context, nc *nats.Conn, bucket, description string, ttl time.Duration, replicas int) (*Set, error) {
	kv, err := bus.EnsureKV(ctx, nc, jetstream.KeyValueConfig{
		Bucket: bucket, Description: description, History: 1, TTL: ttl, Replicas: replicas,
	})
	if err != nil {
		return nil, err
	}
	return &Set{
		kv: kv, id: replicaID(), revs: map[string]uint64{}, opTimeout: max(ttl/3, time.Second), ttl: ttl,
		dropping: map[string]chan struct{}{}, dropped: make(chan struct{}, 1),
	}, nil
}

// op is the context of one bucket operation.
func (s *Set) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opTimeout)
}

// ID names this replica in the bucket: host, pid and a random suffix.
func (s *Set) ID() string { return s.id }

// Held returns the keys this replica holds, sorted.
func (s *Set) Held() []string { return slices.Sorted(maps.Keys(s.revs)) }

// replicaID names this process: host, pid and a random suffix (a KV key
// token: letters, digits, '-' and '_').
func replicaID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// heartbeat says this replica is alive, with its cap, and returns the caps
// of the replicas alive (0: none), its own among them.
func (s *Set) heartbeat(ctx context.Context) ([]int, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	var val []byte
	if s.Cap > 0 {
		val = strconv.AppendInt(nil, int64(s.Cap), 10)
	}
	if _, err := s.kv.Put(ctx, ReplicaPrefix+s.id, val); err != nil {
		return nil, err
	}
	keys, err := s.kv.ListKeysFiltered(ctx, ReplicaPrefix+">")
	if err != nil {
		return nil, err
	}
	caps := []int{s.Cap}
	for key := range keys.Keys() {
		if key == ReplicaPrefix+s.id {
			continue
		}
		c := 0
		if e, err := s.kv.Get(ctx, key); err == nil {
			c, _ = strconv.Atoi(string(e.Value())) // empty (no cap, or an older version): 0
		}
		caps = append(caps, max(c, 0))
	}
	return caps, nil
}

// fairShare is how many of n keys a replica with cap own (0: none) aims
// to hold when the replicas alive have caps caps: the keys spread as
// evenly as the caps let, at the lowest level L with Σ min(cap, L) ≥ n,
// the capped replicas' remainder going to the others. Without caps it is
// ceil(n / replicas). When the caps hold fewer than n, each aims for its
// cap and the rest wait.
func fairShare(n int, caps []int, own int) int {
	fill := func(level int) int {
		sum := 0
		for _, c := range caps {
			if c == 0 || c > level {
				c = level
			}
			sum += c
		}
		return sum
	}
	level := sort.Search(n, func(l int) bool { return fill(l) >= n })
	if own > 0 {
		return min(own, level)
	}
	return level
}

// capacity is how many keys the replicas with caps caps hold at most; -1
// when one has no cap.
func capacity(caps []int) int {
	sum := 0
	for _, c := range caps {
		if c == 0 {
			return -1
		}
		sum += c
	}
	return sum
}

// acquire takes the lease of key if it is free.
func (s *Set) acquire(ctx context.Context, key string) (bool, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	rev, err := s.kv.Create(ctx, KeyPrefix+key, []byte(s.id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.revs[key] = rev
	return true, nil
}

// renewers is how many lease renewals a round has in flight at once. Each
// is a KV round trip: hundreds of cameras renewed one after another took
// longer than a TTL on a loaded server, and the leases expired.
const renewers = 16

// renewAll extends the leases of keys, renewers at a time, and returns
// each one's error: one means the lease is no longer ours (or NATS did not
// answer).
func (s *Set) renewAll(ctx context.Context, keys []string) map[string]error {
	revs, errs := make([]uint64, len(keys)), make([]error, len(keys))
	var g errgroup.Group
	g.SetLimit(renewers)
	for i, key := range keys {
		rev := s.revs[key]
		g.Go(func() error {
			octx, cancel := s.op(ctx)
			defer cancel()
			revs[i], errs[i] = s.kv.Update(octx, KeyPrefix+key, []byte(s.id), rev)
			if errs[i] != nil && !bus.Transient(ctx, errs[i]) {
				// A renewal that timed out here may have been stored
				// there: the entry is still ours, at a newer revision.
				if e, err := s.kv.Get(octx, KeyPrefix+key); err == nil && string(e.Value()) == s.id {
					revs[i], errs[i] = e.Revision(), nil
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	out := make(map[string]error, len(keys))
	for i, key := range keys {
		if errs[i] == nil {
			s.revs[key] = revs[i]
		}
		out[key] = errs[i]
	}
	return out
}

// release gives the lease of key back, if it is still ours.
func (s *Set) release(ctx context.Context, key string) {
	if rev, ok := s.revs[key]; ok {
		ctx, cancel := s.op(ctx)
		_ = s.kv.Delete(ctx, KeyPrefix+key, jetstream.LastRevision(rev))
		cancel()
		delete(s.revs, key)
	}
}

// Leave releases every lease and the replica's own key, so that the
// others take its keys at once instead of after a TTL.
func (s *Set) Leave(ctx context.Context) {
	for _, key := range s.Held() {
		s.release(ctx, key)
	}
	_ = s.kv.Delete(ctx, ReplicaPrefix+s.id)
}

// Work is what a replica does with the keys it holds.
type Work struct {
	// Hold is called every round for every key held: renewed or newly
	// taken (so it must be cheap when nothing changed).
	Hold func(key string)
	// Drop is called when a key stops being this replica's: before its
	// lease is given back (so two replicas never work on it at once), or
	// after the lease was lost. It runs on a goroutine of its own, which
	// a round waits for up to a tenth of the TTL; Hold is not called for
	// the key until it has returned.
	Drop func(key string)
	Log  *slog.Logger
}

// Balance is one round: it renews the leases held (dropping keys that
// went and leases lost), gives one key back while this replica holds more
// than its share, and takes free keys while it holds fewer. Keys whose
// Drop started in an earlier round and has returned are given back first.
func (s *Set) Balance(ctx context.Context, keys []string, w Work) {
	caps, err := s.heartbeat(ctx)
	now := time.Now()
	if err == nil {
		if s.failedBeats > 0 && now.Sub(s.beatAt) >= s.ttl {
			// Back from an outage longer than the TTL: the other
			// replicas' heartbeats expired too, and come back over a
			// round. Taking a share of this short view of them would
			// take every free key, to give most back round by round.
			s.settleUntil = now.Add(s.ttl / 2)
		}
		s.failedBeats, s.beatAt = 0, now
	}
	switch {
	case err == nil:
		s.caps = caps
	case errors.Is(err, context.DeadlineExceeded) && s.caps != nil && ctx.Err() == nil:
		// A slow answer, not NATS gone: renew anyway, or the leases expire.
		w.Log.Warn("lease heartbeat slow; renewing with the last view of the replicas", "err", err)
		caps = s.caps
	default:
		if s.failedBeats++; telemetry.Thinned(s.failedBeats) { // in a row: an outage must not flood the log
			w.Log.Warn("lease heartbeat failed", "err", err, "failures", s.failedBeats)
		}
		// NATS unreachable: keep what runs, renew next round; but once
		// the leases have expired in the bucket (a TTL without a
		// heartbeat), another replica may take them the moment NATS is
		// back: stop working on them first.
		if !s.beatAt.IsZero() && now.Sub(s.beatAt) >= s.ttl {
			expired := 0
			for _, key := range s.Held() {
				if _, busy := s.dropping[key]; !busy {
					expired++
					s.drop(key, w.Drop)
				}
			}
			if expired > 0 {
				w.Log.Warn("leases expired while NATS was unreachable: their cameras stop until taken again", "keys", expired, "since_heartbeat", now.Sub(s.beatAt).Round(time.Second))
			}
		}
		return
	}
	recovering := now.Before(s.settleUntil)
	replicas := len(caps)
	s.giveBack(ctx)
	var started []chan struct{}
	defer func() { s.await(started) }()
	drop := func(key string) { started = append(started, s.drop(key, w.Drop)) }

	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	keys = slices.Sorted(maps.Keys(want))
	share := fairShare(len(keys), caps, s.Cap)
	if c := capacity(caps); c >= 0 && len(keys) > c {
		if s.short++; telemetry.Thinned(s.short) {
			w.Log.Warn("more cameras than the replicas take: the rest wait for a replica with room (decode.max_cameras)",
				"cameras", len(keys), "replicas", replicas, "capacity", c, "waiting", len(keys)-c, "rounds", s.short)
		}
	} else {
		s.short = 0
	}

	var renew []string
	for _, key := range s.Held() {
		if _, busy := s.dropping[key]; !want[key] && !busy { // gone
			drop(key)
			continue
		}
		renew = append(renew, key)
	}
	errs := s.renewAll(ctx, renew)
	if ctx.Err() != nil {
		return // stopping: Run drops what is held
	}
	var held []string
	for _, key := range renew {
		_, busy := s.dropping[key]
		if err := errs[key]; err != nil {
			if bus.Transient(ctx, err) {
				if !busy {
					held = append(held, key) // try again next round
				}
				continue
			}
			delete(s.revs, key)
			if !busy {
				w.Log.Warn("lease lost; dropping its camera", "camera", key, "err", err)
				drop(key)
			}
			continue
		}
		if busy || !want[key] {
			continue // its Drop is under way: the lease is kept, not worked on
		}
		w.Hold(key)
		held = append(held, key)
	}
	if len(held) > share { // one per round, so the others can follow
		key := held[len(held)-1]
		w.Log.Info("giving a camera to another replica", "camera", key, "replicas", replicas, "share", share)
		drop(key)
		return
	}
	if recovering {
		return // free keys once the others' heartbeats are back (settleUntil)
	}
	// Start the search at a different place in every replica, so that
	// replicas starting together do not all race for the same keys.
	off := 0
	if len(keys) > 0 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(s.id))
		off = int(h.Sum32() % uint32(len(keys)))
	}
	for i := 0; i < len(keys) && len(held) < share; i++ {
		key := keys[(off+i)%len(keys)]
		if _, ok := s.revs[key]; ok {
			continue
		}
		if _, busy := s.dropping[key]; busy {
			continue
		}
		got, err := s.acquire(ctx, key)
		if err != nil {
			w.Log.Warn("camera lease", "camera", key, "err", err)
			return
		}
		if got {
			w.Hold(key)
			held = append(held, key)
		}
	}
}

// drop runs Drop(key) on a goroutine of its own, and returns the channel
// closed when it returns. The lease (if still ours) is given back by the
// first round after that.
func (s *Set) drop(key string, drop func(string)) chan struct{} {
	done := make(chan struct{})
	s.dropping[key] = done
	go func() {
		defer func() {
			close(done)
			select {
			case s.dropped <- struct{}{}:
			default:
			}
		}()
		drop(key)
	}()
	return done
}

// await waits for the Drops a round started, up to a tenth of the TTL
// (the next round must still renew the other leases in time), and gives
// back the leases of those that returned. The others go on in the
// background; Run's next round gives theirs back.
func (s *Set) await(started []chan struct{}) {
	if len(started) == 0 {
		return
	}
	t := time.NewTimer(s.ttl / 10)
	defer t.Stop()
	for _, done := range started {
		select {
		case <-done:
		case <-t.C:
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout)
	defer cancel()
	s.giveBack(ctx)
}

// giveBack gives back the lease of every key whose Drop has returned.
func (s *Set) giveBack(ctx context.Context) {
	for key, done := range s.dropping {
		select {
		case <-done:
			delete(s.dropping, key)
			s.release(ctx, key)
		default:
		}
	}
}

// Run balances every interval, and whenever changed fires, over the keys
// that keys returns then, until ctx is done; then it drops every key and
// leaves.
func (s *Set) Run(ctx context.Context, interval time.Duration, changed <-chan struct{}, keys func() []string, w Work) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, done := range s.dropping {
				<-done
			}
			for _, key := range s.Held() {
				if _, dropped := s.dropping[key]; !dropped {
					w.Drop(key)
				}
			}
			clear(s.dropping)
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.Leave(lctx)
			cancel()
			return
		case <-t.C:
		case <-changed:
		case <-s.dropped:
		}
		s.Balance(ctx, keys(), w)
	}
}
