package generate

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
)

// TestAutoTriggersSharedByReplicas runs two replicas with automatic
// triggers on one NATS server while four cameras stream: they share the
// cameras two and two, each camera's anomalies come from one replica and
// no frame is scored twice; when one replica dies, the other takes its
// cameras within the lease TTL.
func TestAutoTriggersSharedByReplicas(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	bundle := copyBundle(t, func(m map[string]any) { m["patchline"].(map[string]any)["anomaly_threshold"] = 0 })
	cfg := testGenerate()
	cfg.Auto = true
	cfg.Triggers = config.Triggers{OnAnomaly: true} // no cooldown: every scored frame is an anomaly
	cfg.LeaseTTL = 3 * time.Second                  // b's cameras move within ~4 s; one slow renewal does not move a camera

	type replica struct {
		st *Stage
		nc *nats.Conn
	}
	start := func(name string) replica {
		fg, err := OpenFramegen(bundle, ModelOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fg.Close() }) // after the stage stopped
		rnc := natstest.Connect(t, url)
		st := NewStage(Options{NC: rnc, Config: cfg, Framegen: fg, Logger: natstest.Discard()})
		st.replica = name // both run in this process: tell them apart
		serve(t, st)
		return replica{st, rnc}
	}
	owned := func(r replica) int {
		r.st.mu.Lock()
		defer r.st.mu.Unlock()
		return len(r.st.owned)
	}

	cams := []string{"cam1", "cam2", "cam3", "cam4"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // every camera streams at 20 frames/s until the test ends
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, c := range cams {
				_ = publishFrame(nc, c, seq)
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	a, b := start("a"), start("b")
	waitFor(t, "two cameras held by each replica", func() bool { return owned(a) == 2 && owned(b) == 2 })
	checkAnomalies(t, nc, cams, 2)

	b.nc.Close() // b dies: it renews nothing and gives nothing back
	waitFor(t, "a to take b's cameras", func() bool { return owned(a) == 4 })
	if by := checkAnomalies(t, nc, cams, 1); by["a"] != len(cams) {
		t.Errorf("after b died, cameras per replica: %v, want all %d from a", by, len(cams))
	}
}

// checkAnomalies collects anomaly annotations until every camera has
// several, and checks that no frame was scored twice and that each camera's
// came from one replica, and that they came from replicas replicas. It
// returns how many cameras each replica annotated.
func checkAnomalies(t *testing.T, nc *nats.Conn, cams []string, replicas int) map[string]int {
	t.Helper()
	msgs := collect(t, nc, bus.AnnotationsPrefix+"*")
	byCam := map[string][]annotation.Annotation{}
	waitFor(t, "anomalies of every camera", func() bool {
		clear(byCam)
		for _, m := range msgs() {
			var a annotation.Annotation
			if err := json.Unmarshal(m.Data, &a); err != nil || a.Kind != annotation.KindAnomaly {
				continue
			}
			byCam[a.Camera] = append(byCam[a.Camera], a)
		}
		for _, c := range cams {
			if len(byCam[c]) < 5 {
				return false
			}
		}
		return true
	})
	camsBy := map[string]int{}
	for _, c := range cams {
		seen := map[uint64]bool{}
		from := map[string]bool{}
		for _, a := range byCam[c] {
			if seen[a.Seq] {
				t.Errorf("%s frame %d scored twice", c, a.Seq)
			}
			seen[a.Seq] = true
			from[a.AnalyzedBy] = true
		}
		if len(from) != 1 {
			t.Errorf("%s's anomalies came from replicas %v, want one", c, from)
		}
		for r := range from {
			camsBy[r]++
		}
	}
	if len(camsBy) != replicas {
		t.Errorf("cameras per replica %v, want %d replicas", camsBy, replicas)
	}
	t.Logf("cameras per replica: %v", fmt.Sprint(camsBy))
	return camsBy
}

// TestRequestsReachTheReplicaWithTheModel: of two replicas, one without a
// framegen model (configured apart, or mid rolling change), every frame
// request is served by the one with it: the other hands requests back
// instead of answering unavailable.
func TestRequestsReachTheReplicaWithTheModel(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	waitReady(t,
		runStage(t, url, testGenerate(), openTiny(t), nil),
		runStage(t, url, testGenerate(), nil, nil), // no framegen
	)
	publishFrames(t, nc, "cam1", 1, 6)
	waitFor(t, "the window", func() bool { return request(t, nc, `{"camera":"cam1","kind":"frame"}`).Error == "" })
	for i := range 20 {
		if r := request(t, nc, `{"camera":"cam1","kind":"frame"}`); r.Error != "" {
			t.Fatalf("request %d: %s (%s), want it served by the replica with the model", i, r.Error, r.Reason)
		}
	}
}

// TestOverloadedRequestsReachAFreeReplica: of two replicas, one has every
// slot busy and no queue room. A request that reaches it goes back to the
// queue group instead of being answered overloaded, so the other replica
// serves every request, and the full one counts no rejection.
func TestOverloadedRequestsReachAFreeReplica(t *testing.T) {
	url := natstest.Start(t)
	nc := natstest.Connect(t, url)
	cfg := testGenerate()
	cfg.Budget, cfg.QueueSize = 1, 0
	full := runStage(t, url, cfg, openTiny(t), nil)
	waitReady(t, full, runStage(t, url, cfg, openTiny(t), nil))
	publishFrames(t, nc, "cam1", 1, 6)
	waitFor(t, "the window", func() bool { return request(t, nc, `{"camera":"cam1","kind":"frame"}`).Error == "" })

	// Fill the one replica's only slot, as a long generation would (once
	// the generation that answered above, if it ran there, has let it go).
	waitFor(t, "the slot free", func() bool {
		full.sched.mu.Lock()
		defer full.sched.mu.Unlock()
		if full.sched.running != 0 {
			return false
		}
		full.sched.running = full.sched.budget
		return true
	})
	t.Cleanup(func() {
		full.sched.mu.Lock()
		full.sched.running = 0
		full.sched.mu.Unlock()
	})
	before := testutil.ToFloat64(metricRejected.WithLabelValues(KindFrame, ReasonOverloaded))
	for i := range 20 {
		if r := request(t, nc, `{"camera":"cam1","kind":"frame"}`); r.Error != "" {
			t.Fatalf("request %d: %s (%s), want it served by the replica with a free slot", i, r.Error, r.Reason)
		}
	}
	if full.HandedBack() == 0 {
		t.Error("the full replica handed nothing back: no request reached it (chance 2⁻²⁰)")
	}
	if d := testutil.ToFloat64(metricRejected.WithLabelValues(KindFrame, ReasonOverloaded)) - before; d != 0 {
		t.Errorf("%v requests counted overloaded, want none: each was handed back and served", d)
	}
}

// waitReady waits until every replica is ready.
func waitReady(t *testing.T, replicas ...*Stage) {
	t.Helper()
	for _, st := range replicas {
		select {
		case <-st.Ready():
		case <-time.After(10 * time.Second):
			t.Fatal("replica not ready")
		}
	}
}
