package decode

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/telemetry"
	"github.com/patchline/patchline/internal/testenv"
)

// TestRelayCountsMissedPackets: forward jumps of the RTP sequence number
// (across its wrap too) count the packets skipped, in the status and the
// metric; a late packet (a retransmission) is not a loss.
func TestRelayCountsMissedPackets(t *testing.T) {
	r := newRelay(nil, "gappy", time.Second, natstest.Discard())
	before := testutil.ToFloat64(telemetry.RTPPacketsMissed.WithLabelValues("gappy"))
	for _, seq := range []uint16{65533, 65534, 1, 0, 2, 3, 7} { // skips 65535 and 0 (0 comes late), then 4..6
		pkt := make([]byte, 12)
		pkt[0] = 2 << 6
		binary.BigEndian.PutUint16(pkt[2:4], seq)
		m := &nats.Msg{Subject: bus.RTPSubject("gappy"), Data: pkt, Header: nats.Header{bus.RTPCodecHeader: []string{"vp8"}}}
		r.onMsg(m)
	}
	if got := r.packetsMissed(); got != 5 {
		t.Errorf("missed %d packets, want 5 (65535, 0, 4, 5, 6)", got)
	}
	if got := testutil.ToFloat64(telemetry.RTPPacketsMissed.WithLabelValues("gappy")) - before; got != 5 {
		t.Errorf("patchline_rtp_packets_missed_total rose by %v, want 5", got)
	}
}

// TestWHIPOpenEndsAtStop: a WHIP camera waiting for its turn to open (a
// capture open of another camera under way) gives up at its stop, rather
// than waiting for the turn and then opening a stream whose relay ended.
func TestWHIPOpenEndsAtStop(t *testing.T) {
	c, err := NewCamera(config.Camera{ID: "w1", URL: "whip://"}, Options{NC: startNATS(t),
		Decode: config.Decode{Width: 96, Height: 96, PatchSize: 8, StallTimeout: 2 * time.Second}, Logger: natstest.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	c.relay.mu.Lock()
	c.relay.codec, c.relay.last = "vp8", time.Now().Add(time.Hour) // a publisher sending
	c.relay.mu.Unlock()
	openTurn <- struct{}{} // another camera's open under way
	defer func() { <-openTurn }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	testenv.WaitFor(t, "the WHIP camera waiting for its turn to open", 5*time.Second, func() bool { return openWaiting.Load() == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Error("the WHIP camera still waits for its turn to open 3 s after its stop")
	}
}
