package decode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/telemetry"
)

// A whip:// camera has no address: its publisher's WebRTC peer lives in
// ingest, which publishes the video RTP packets on patchline.rtp.<camera>.
// The camera's worker relays them to a loopback UDP port and opens an SDP
// file describing that port with OpenCV's FFmpeg backend, so WebRTC video is
// decoded like every other source. Decode and ingest may run in different
// processes or hosts: only NATS is between them.

// rtpPayloadType is the payload type the SDP file declares; the relay
// rewrites every packet to it, whatever the publisher negotiated.
const rtpPayloadType = 96

// Relay timings.
const (
	// liveWindow: a publisher is live while its packets are this recent.
	liveWindow = 2 * time.Second
	// keyframeGap rate-limits keyframe requests.
	keyframeGap = 500 * time.Millisecond
	// openKeyframeEvery: while FFmpeg probes the stream, ask this often.
	openKeyframeEvery = 400 * time.Millisecond
)

// errNoPublisher is returned by the open of a whip:// camera whose publisher
// left between the wait and the open.
var errNoPublisher = errors.New("no WHIP publisher")

// rtpRelay receives one camera's RTP from NATS and writes it to the UDP port
// FFmpeg reads. Packets arriving while no port is attached are dropped (they
// only tell that a publisher is live). To unblock a read in FFmpeg — when
// the publisher leaves, sends nothing for the stall timeout, changes codec,
// or the worker stops — it sends an RTCP BYE to the port, which FFmpeg's RTP
// demuxer turns into end of stream.
type rtpRelay struct {
	nc     *nats.Conn
	camera string
	stall  time.Duration
	log    *slog.Logger

	arrived chan struct{} // a packet came (capacity 1)

	mu       sync.Mutex
	codec    string // the publisher's codec; "" when it left
	last     time.Time
	seq      uint16
	haveSeq  bool
	asked    time.Time
	dst      *net.UDPConn // FFmpeg's port, nil when none
	dstCodec string
	ended    bool   // a BYE went to dst: FFmpeg's stream is over
	missed   uint64 // packets skipped by forward jumps of the RTP sequence number
}

func newRelay(nc *nats.Conn, camera string, stall time.Duration, log *slog.Logger) *rtpRelay {
	return &rtpRelay{nc: nc, camera: camera, stall: stall, log: log, arrived: make(chan struct{}, 1)}
}

// run relays until ctx is done: it subscribes to the camera's RTP and
// watches for a stalled publisher. It returns the subscription error, if any.
func (r *rtpRelay) run(ctx context.Context) error {
	sub, err := r.nc.Subscribe(bus.RTPSubject(r.camera), r.onMsg)
	if err != nil {
		return fmt.Errorf("decode: subscribe %s: %w", bus.RTPSubject(r.camera), err)
	}
	_ = sub.SetPendingLimits(4096, 16<<20)
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTicker(max(r.stall/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.bye()
			return nil
		case <-t.C:
		}
		r.mu.Lock()
		stalled := r.dst != nil && time.Since(r.last) > r.stall
		r.mu.Unlock()
		if stalled {
			r.log.Warn("whip: no RTP from the publisher", "for", r.stall)
			r.bye()
		}
	}
}

func (r *rtpRelay) onMsg(m *nats.Msg) {
	if why := m.Header.Get(bus.RTPByeHeader); why != "" {
		r.mu.Lock()
		r.codec, r.haveSeq = "", false
		r.mu.Unlock()
		r.log.Info("whip: publisher left", "why", why)
		r.bye()
		return
	}
	codec := m.Header.Get(bus.RTPCodecHeader)
	if len(m.Data) < 12 || m.Data[0]>>6 != 2 || sdpCodec(codec) == "" {
		return // not RTP of a codec we can describe
	}
	now := time.Now()
	seq := binary.BigEndian.Uint16(m.Data[2:4])
	r.mu.Lock()
	r.codec, r.last = codec, now
	ask := false
	if r.haveSeq {
		// A forward jump is loss; a step back is a retransmission.
		if d := seq - r.seq; d > 1 && d < 0x8000 {
			r.missed += uint64(d - 1)
			telemetry.RTPPacketsMissed.WithLabelValues(r.camera).Add(float64(d - 1))
			ask = true
		}
		if d := seq - r.seq; d < 0x8000 {
			r.seq = seq
		}
	} else {
		r.seq, r.haveSeq = seq, true
	}
	dst, changed := r.dst, r.dst != nil && r.dstCodec != codec
	r.mu.Unlock()
	if changed { // a new publisher with another codec: reopen with a new SDP
		r.bye()
		dst = nil
	}
	if ask {
		r.askKeyframe(false)
	}
	if dst != nil {
		m.Data[1] = m.Data[1]&0x80 | rtpPayloadType
		_, _ = dst.Write(m.Data)
	}
	select {
	case r.arrived <- struct{}{}:
	default:
	}
}

// live returns the publisher's codec while its packets are recent, else "".
func (r *rtpRelay) live() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.codec == "" || time.Since(r.last) > liveWindow {
		return ""
	}
	return r.codec
}

// packetsMissed is how many RTP packets the relay has seen skipped.
func (r *rtpRelay) packetsMissed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missed
}

// left reports whether the publisher said it left (ingest's bye: a DELETE,
// its connection closed or failed, a newer publisher) and none sent since.
func (r *rtpRelay) left() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.codec == ""
}

// waitPublisher blocks until a publisher is live (true) or ctx is done
// (false), calling offline first if there is none yet.
func (r *rtpRelay) waitPublisher(ctx context.Context, offline func()) bool {
	called := false
	for r.live() == "" {
		if !called {
			offline()
			called = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-r.arrived:
		}
	}
	return ctx.Err() == nil
}

// askKeyframe asks ingest for a keyframe (a PLI to the publisher), at most
// once per keyframeGap unless forced.
func (r *rtpRelay) askKeyframe(force bool) {
	r.mu.Lock()
	if !force && time.Since(r.asked) < keyframeGap {
		r.mu.Unlock()
		return
	}
	r.asked = time.Now()
	r.mu.Unlock()
	_ = r.nc.Publish(bus.KeyframeSubject(r.camera), nil)
}

// attach starts writing packets to 127.0.0.1:port.
func (r *rtpRelay) attach(port int, codec string) error {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return fmt.Errorf("decode: rtp relay: %w", err)
	}
	r.mu.Lock()
	old := r.dst
	r.dst, r.dstCodec, r.ended = c, codec, false
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// detach stops writing packets.
func (r *rtpRelay) detach() {
	r.mu.Lock()
	c := r.dst
	r.dst = nil
	r.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// rtcpBye is an RTCP BYE (SSRC 0, empty reason), 12 bytes: FFmpeg's RTP
// demuxer ignores datagrams shorter than an RTP header.
var rtcpBye = []byte{0x81, 203, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0}

// bye ends the stream FFmpeg is reading, if any.
func (r *rtpRelay) bye() {
	r.mu.Lock()
	c := r.dst
	r.ended = r.ended || c != nil
	r.mu.Unlock()
	if c != nil {
		_, _ = c.Write(rtcpBye)
	}
}

// sdpCodec is the SDP rtpmap encoding of a bus codec name, "" if unknown.
func sdpCodec(codec string) string {
	switch codec {
	case "h264":
		return "H264/90000"
	case "vp8":
		return "VP8/90000"
	}
	return ""
}

// rtpSDP describes RTP of codec on 127.0.0.1:port for FFmpeg's sdp demuxer.
// H.264 parameter sets are not in it: they come in-band with keyframes.
func rtpSDP(port int, codec string) string {
	s := "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=patchline whip\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video " + strconv.Itoa(port) + " RTP/AVP 96\r\na=rtpmap:96 " + sdpCodec(codec) + "\r\n"
	if codec == "h264" {
		s += "a=fmtp:96 packetization-mode=1\r\n"
	}
	// FFmpeg's socket listens on every address: only the relay's packets
	// (from loopback) count, not RTP another host sprays at the port.
	return s + "a=source-filter: incl IN IP4 * 127.0.0.1\r\n"
}

// freeRTPPort finds an even loopback UDP port whose successor (RTCP) is
// free too, as FFmpeg binds both.
func freeRTPPort() (int, error) {
	for range 20 {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p > 65534 {
			_ = a.Close()
			continue
		}
		b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		_ = a.Close()
		if err == nil {
			_ = b.Close()
			return p, nil
		}
	}
	return 0, errors.New("decode: no free loopback UDP port pair for RTP")
}

// whipSource is an opened WHIP camera: OpenCV reading the relayed RTP.
type whipSource struct {
	*cvSource
	relay *rtpRelay
	sdp   string
}

// openWHIP opens the relayed stream of the live publisher. FFmpeg's probe
// needs a keyframe (H.264 parameter sets come with it), so it asks for one
// until the open returns.
func (r *rtpRelay) open(redacted string, o SourceOptions) (Source, error) {
	codec := r.live()
	if codec == "" {
		return nil, errNoPublisher
	}
	port, err := freeRTPPort()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "patchline-whip-*.sdp")
	if err != nil {
		return nil, fmt.Errorf("decode: the WHIP stream's SDP file, in the temporary directory (TMPDIR, else /tmp): %w", err)
	}
	_, werr := f.WriteString(rtpSDP(port, codec))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return nil, fmt.Errorf("decode: sdp file: %w", werr)
	}
	if err := r.attach(port, codec); err != nil {
		_ = os.Remove(f.Name())
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(openKeyframeEvery)
		defer t.Stop()
		r.askKeyframe(true)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.askKeyframe(true)
			}
		}
	}()
	src, err := openCV(f.Name(), redacted, KindWHIP, o)
	close(stop)
	wg.Wait()
	if err != nil {
		r.detach()
		_ = os.Remove(f.Name())
		return nil, fmt.Errorf("%w (%s over WebRTC: no keyframe yet, or the publisher left)", err, codec)
	}
	r.askKeyframe(true) // the frames FFmpeg probed are gone: start clean
	return &whipSource{cvSource: src, relay: r, sdp: f.Name()}, nil
}

// Grab decodes the next frame. A decode error (OpenCV's grab fails when
// FFmpeg's decoder rejects a packet: an interframe before the first
// keyframe, a frame damaged by packet loss) is not the end of the stream:
// it asks for a keyframe and reads on, until the relay ended the stream or
// no frame came for the stall timeout.
func (s *whipSource) Grab() (time.Duration, error) {
	deadline := time.Now().Add(s.o.StallTimeout)
	for {
		pts, err := s.cvSource.Grab()
		if err == nil || s.relay.streamEnded() || time.Now().After(deadline) {
			return pts, err
		}
		s.relay.askKeyframe(false)
	}
}

// streamEnded reports whether the relay ended the stream FFmpeg reads.
func (r *rtpRelay) streamEnded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended
}

func (s *whipSource) Close() error {
	s.relay.detach()
	err := s.cvSource.Close()
	_ = os.Remove(s.sdp)
	return err
}
