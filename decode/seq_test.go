package decode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
)

func TestSeqStoreReservesBlocks(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	s, err := OpenSeqStore(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		camera string
		want   uint64
	}{{"a", seqBlock}, {"a", 2 * seqBlock}, {"b", seqBlock}, {"a", 3 * seqBlock}} {
		if got, err := s.reserve(ctx, c.camera); err != nil || got != c.want {
			t.Fatalf("reserve(%s) = %d, %v; want %d", c.camera, got, err, c.want)
		}
	}
	if _, err := s.kv.Put(ctx, "seq.c", []byte("twelve")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.reserve(ctx, "c"); err == nil || !strings.Contains(err.Error(), `seq.c in bucket patchline_decode is "twelve", not a number`) {
		t.Fatalf("reserve over a corrupt value: %v", err)
	}
}

// A camera started again goes on after its last reserved block, and a
// running camera reserves its next block before it runs out.
func TestCameraSeqNeverRepeats(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	seqs, err := OpenSeqStore(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}
	spec := config.Camera{ID: "cam", URL: "synthetic://?seed=3&fps=30", FPS: 30}
	firstSeqs := func() []uint64 {
		t.Helper()
		msgs := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe(bus.FrameSubject(spec.ID), msgs)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		// A queue the frames never overflow: a drop on a loaded machine
		// would leave a gap in the seqs this test reads.
		cam, err := NewCamera(spec, Options{NC: nc, Seqs: seqs, Decode: config.Decode{QueueSize: 256}})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); cam.Run(rctx) }()
		defer func() { cancel(); <-done }()
		var got []uint64
		for len(got) < 3 {
			select {
			case m := <-msgs:
				f, err := frame.Decode(m.Header, m.Data)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, f.Seq)
			case <-time.After(10 * time.Second):
				t.Fatalf("frames so far: %v", got)
			}
		}
		return got
	}
	if got := firstSeqs(); got[0] != 1 || got[2] != 3 {
		t.Fatalf("first run: seq %v, want 1 2 3", got)
	}
	if got := firstSeqs(); got[0] != seqBlock+1 || got[2] != seqBlock+3 {
		t.Fatalf("second run: seq %v, want %d..%d", got, seqBlock+1, seqBlock+3)
	}

	cam, err := NewCamera(config.Camera{ID: "other", URL: "synthetic://"}, Options{NC: nc, Seqs: seqs})
	if err != nil {
		t.Fatal(err)
	}
	cam.startSeq(ctx)
	cam.seq = seqBlock / 2 // half of the block used: the next frame reserves the next block
	if got := cam.nextSeq(); got != seqBlock/2+1 {
		t.Fatalf("nextSeq = %d", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cam.seqEnd.Load() != 2*seqBlock {
		if time.Now().After(deadline) {
			t.Fatalf("block end %d, want %d", cam.seqEnd.Load(), 2*seqBlock)
		}
		time.Sleep(10 * time.Millisecond)
	}
	kv, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := kv.KeyValue(ctx, bus.DecodeBucket)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := b.Get(ctx, "seq.other"); err != nil || string(e.Value()) != "20000" {
		t.Fatalf("seq.other = %v, %v; want 20000", e, err)
	}
}
