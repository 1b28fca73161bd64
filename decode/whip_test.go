package decode

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/natstest"
	"github.com/patchline/patchline/internal/telemetry"
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
