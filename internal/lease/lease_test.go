package lease

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/testenv"
)

// holder records what Balance tells a replica to work on. A Drop runs
// on a goroutine of its own, beside the Holds of other keys.
type holder struct {
	mu sync.Mutex
	m  map[string]bool
}

func newHolder() *holder { return &holder{m: map[string]bool{}} }

func (h *holder) set(k string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.m[k] = true
	} else {
		delete(h.m, k)
	}
}

func (h *holder) has(k string) bool { h.mu.Lock(); defer h.mu.Unlock(); return h.m[k] }

func (h *holder) keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.m))
}

func (h *holder) work() Work {
	return Work{Hold: func(k string) { h.set(k, true) }, Drop: func(k string) { h.set(k, false) }, Log: natstest.Discard()}
}

// TestBalance shares keys among replicas round by round: equal shares,
// each key held once, keys that go are dropped, a replica that leaves
// hands its keys over at once, and a lease lost is dropped.
func TestBalance(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	open := func() *Set {
		s, err := Open(ctx, nc, "test_leases", "test", time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	ha, hb := newHolder(), newHolder()
	keys := []string{"k1", "k2", "k3", "k4"}
	rounds := func(n int, keys []string) {
		for range n {
			a.Balance(ctx, keys, ha.work())
			b.Balance(ctx, keys, hb.work())
		}
	}
	checkSplit := func(keys []string) {
		t.Helper()
		for _, k := range keys {
			if ha.has(k) == hb.has(k) {
				t.Errorf("key %s: held by a %v, by b %v; want exactly one (a %v, b %v)", k, ha.has(k), hb.has(k), ha.keys(), hb.keys())
			}
		}
		if !slices.Equal(ha.keys(), a.Held()) || !slices.Equal(hb.keys(), b.Held()) {
			t.Errorf("work %v/%v differs from leases %v/%v", ha.keys(), hb.keys(), a.Held(), b.Held())
		}
	}

	rounds(1, keys) // a sees one replica and takes all; b sees two and takes none yet
	rounds(3, keys)
	if len(ha.keys()) != 2 || len(hb.keys()) != 2 {
		t.Fatalf("after 4 rounds a holds %v, b %v; want 2 each", ha.keys(), hb.keys())
	}
	checkSplit(keys)

	rounds(1, keys[:3]) // k4 went
	if ha.has("k4") || hb.has("k4") {
		t.Errorf("k4 went but is still held (a %v, b %v)", ha.keys(), hb.keys())
	}
	checkSplit(keys[:3])

	// A renewal stored whose answer was lost (it timed out here) leaves the
	// entry ours at a revision a does not know: a keeps the key.
	kept := a.Held()[0]
	if _, err := a.kv.Update(ctx, KeyPrefix+kept, []byte(a.id), a.revs[kept]); err != nil {
		t.Fatal(err)
	}
	a.Balance(ctx, keys[:3], ha.work())
	if !ha.has(kept) {
		t.Errorf("a dropped %s after a renewal whose answer it did not see", kept)
	}
	checkSplit(keys[:3])

	// A lease taken away (expired, then taken by a third replica) is dropped.
	lost := a.Held()[0]
	if err := a.kv.Delete(ctx, KeyPrefix+lost); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Create(ctx, KeyPrefix+lost, []byte("someone-else")); err != nil {
		t.Fatal(err)
	}
	a.Balance(ctx, keys, ha.work())
	if ha.has(lost) {
		t.Errorf("a still works on %s after losing its lease", lost)
	}
	if err := a.kv.Delete(ctx, KeyPrefix+lost); err != nil {
		t.Fatal(err)
	}

	b.Leave(ctx) // b stops: a takes everything at its next round
	hb = newHolder()
	a.Balance(ctx, keys, ha.work())
	if got := ha.keys(); !slices.Equal(got, keys) {
		t.Errorf("after b left, a holds %v, want %v", got, keys)
	}
}

func TestFairShare(t *testing.T) {
	for _, c := range []struct {
		n    int
		caps []int
		own  int
		want int
	}{
		{4, []int{0, 0}, 0, 2},
		{5, []int{0, 0}, 0, 3},
		{0, []int{0}, 0, 0},
		{5, []int{0}, 0, 5},
		{10, []int{1, 0}, 1, 1}, // the capped one takes its cap...
		{10, []int{1, 0}, 0, 9}, // ...the other the rest
		{10, []int{2, 4, 0}, 0, 4},
		{10, []int{2, 4, 0}, 4, 4},
		{3, []int{1, 1}, 1, 1}, // more keys than the caps hold: each its cap
		{3, []int{5}, 5, 3},
	} {
		if got := fairShare(c.n, c.caps, c.own); got != c.want {
			t.Errorf("fairShare(%d, %v, %d) = %d, want %d", c.n, c.caps, c.own, got, c.want)
		}
	}
}

// TestCap: a replica with a cap holds at most that many keys, and the
// others hold the rest; keys beyond every replica's cap wait, and are
// taken when a replica with room comes.
func TestCap(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	open := func(capacity int) *Set {
		s, err := Open(ctx, nc, "cap_leases", "test", time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		s.Cap = capacity
		return s
	}
	a, b := open(1), open(2)
	ha, hb := newHolder(), newHolder()
	keys := []string{"k1", "k2", "k3", "k4"}
	for range 4 {
		a.Balance(ctx, keys, ha.work())
		b.Balance(ctx, keys, hb.work())
	}
	if len(ha.keys()) != 1 || len(hb.keys()) != 2 {
		t.Fatalf("caps 1 and 2 over 4 keys: a holds %v, b %v", ha.keys(), hb.keys())
	}
	c, hc := open(0), newHolder()
	for range 3 {
		a.Balance(ctx, keys, ha.work())
		b.Balance(ctx, keys, hb.work())
		c.Balance(ctx, keys, hc.work())
	}
	if len(ha.keys()) != 1 || len(hb.keys()) != 2 || len(hc.keys()) != 1 {
		t.Errorf("with an uncapped third: a holds %v, b %v, c %v; want 1, 2, 1", ha.keys(), hb.keys(), hc.keys())
	}
	for _, k := range keys {
		if n := btoi(ha.has(k)) + btoi(hb.has(k)) + btoi(hc.has(k)); n != 1 {
			t.Errorf("key %s held %d times", k, n)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSlowDropKeepsTheOthers: a key whose Drop takes longer than the
// TTL (a camera stopping while its read is blocked) does not cost the
// replica its other keys, whose leases the rounds go on renewing; the
// slow key's own lease is kept until its Drop returns (no one else may
// work on it before), then given back at once.
func TestSlowDropKeepsTheOthers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := natstest.Connect(t, natstest.Start(t))
	const ttl = 3 * time.Second
	s, err := Open(ctx, nc, "slow_leases", "test", ttl, 1) // rounds and operations of 1 s
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keys := []string{"k1", "k2", "k3", "k4"}
	held, dropped := newHolder(), []string{}
	release := make(chan struct{})
	w := Work{
		Hold: func(k string) { held.set(k, true) },
		Drop: func(k string) {
			if k == "k1" {
				<-release
			}
			held.set(k, false)
			mu.Lock()
			dropped = append(dropped, k)
			mu.Unlock()
		},
		Log: natstest.Discard(),
	}
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, time.Second, changed, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(keys) }, w)
	}()
	state := func() ([]string, []string) { mu.Lock(); defer mu.Unlock(); return held.keys(), slices.Clone(dropped) }
	testenv.WaitFor(t, "all four keys held", 10*time.Second, func() bool { h, _ := state(); return len(h) == 4 })
	mu.Lock()
	keys = keys[1:] // k1 goes: its Drop is slow
	mu.Unlock()
	changed <- struct{}{}
	time.Sleep(2 * ttl) // k1's Drop is under way for twice the TTL
	if h, d := state(); len(d) != 0 || !slices.Equal(h, []string{"k1", "k2", "k3", "k4"}) {
		t.Errorf("while k1's drop is under way: holding %v, dropped %v; want k1 k2 k3 k4 held and none dropped", h, d)
	}
	if e, err := s.kv.Get(ctx, KeyPrefix+"k1"); err != nil || string(e.Value()) != s.ID() {
		t.Errorf("k1's lease while its drop is under way: %v %v; want it still ours", e, err)
	}
	close(release)
	testenv.WaitFor(t, "k1's lease given back", 5*time.Second, func() bool {
		_, err := s.kv.Get(ctx, KeyPrefix+"k1")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if h, d := state(); !slices.Equal(d, []string{"k1"}) || !slices.Equal(h, []string{"k2", "k3", "k4"}) {
		t.Errorf("after k1's slow drop: holding %v, dropped %v; want k2 k3 k4 held and only k1 dropped", h, d)
	}
	cancel()
	<-done
}

// TestNoGrabAfterAnOutage: back from an outage longer than the TTL, a
// replica renews what it holds but takes no free key for half a TTL: the
// other replicas' heartbeats expired too and come back over a round, and
// a share of that short view would be every free key. Then it takes its
// share. A shorter outage changes nothing.
func TestNoGrabAfterAnOutage(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	a, err := Open(ctx, nc, "outage_leases", "test", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	ha := newHolder()
	keys := []string{"k1", "k2"}
	a.failedBeats, a.beatAt = 3, time.Now().Add(-2*time.Minute) // three rounds without NATS, for two TTLs
	for range 2 {
		a.Balance(ctx, keys, ha.work())
		if got := ha.keys(); len(got) != 0 {
			t.Errorf("a round within half a TTL of the outage's end took %v, want none", got)
		}
	}
	a.settleUntil = time.Now() // half a TTL later
	a.Balance(ctx, keys, ha.work())
	if got := ha.keys(); !slices.Equal(got, keys) {
		t.Errorf("the round after took %v, want %v (the only replica)", got, keys)
	}

	b, err := Open(ctx, nc, "short_outage_leases", "test", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	hb := newHolder()
	b.failedBeats, b.beatAt = 2, time.Now().Add(-30*time.Second) // within the TTL: the leases held
	b.Balance(ctx, keys, hb.work())
	if got := hb.keys(); !slices.Equal(got, keys) {
		t.Errorf("after an outage shorter than the TTL the round took %v, want %v", got, keys)
	}
}

// TestStopWhenLeasesExpire: a replica cut off from NATS keeps working on
// what it holds while its leases may still be valid, and stops once a
// TTL has passed without a heartbeat: the leases have expired in the
// bucket, and another replica may take them the moment NATS is back,
// while this one would go on publishing the same cameras.
func TestStopWhenLeasesExpire(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	a, err := Open(ctx, nc, "expire_leases", "test", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	ha := newHolder()
	keys := []string{"k1", "k2"}
	a.Balance(ctx, keys, ha.work())
	if got := ha.keys(); !slices.Equal(got, keys) {
		t.Fatalf("holding %v, want %v", got, keys)
	}
	away, cancel := context.WithCancel(ctx)
	cancel() // every bucket operation fails, as with NATS away
	a.beatAt = time.Now().Add(-30 * time.Second)
	a.Balance(away, keys, ha.work())
	if got := ha.keys(); !slices.Equal(got, keys) {
		t.Errorf("half a TTL without a heartbeat: holding %v, want %v still worked on", got, keys)
	}
	a.beatAt = time.Now().Add(-61 * time.Second)
	a.Balance(away, keys, ha.work())
	testenv.WaitFor(t, "both keys dropped", 5*time.Second, func() bool { return len(ha.keys()) == 0 })
}
