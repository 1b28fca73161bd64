// Package whiptest is a real WHIP publisher for tests: a pion peer that
// sends an H.264 or VP8 clip made by ffmpeg, in a loop, in real time.
package whiptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/patchline/patchline/internal/rtsptest"
	"github.com/patchline/patchline/internal/tick"
)

// Codecs a publisher can send.
const (
	H264 = "h264"
	VP8  = "vp8"
)

// MakeClip writes a clip of codec made by ffmpeg from the testsrc2 pattern:
// Annex-B H.264 (baseline, parameter sets before every keyframe) or VP8 in
// IVF, with a keyframe every fps frames.
func MakeClip(t testing.TB, dir, codec string, width, height, fps int, seconds float64) string {
	t.Helper()
	src := fmt.Sprintf("testsrc2=size=%dx%d:rate=%d:duration=%s", width, height, fps, strconv.FormatFloat(seconds, 'f', -1, 64))
	args := []string{"-f", "lavfi", "-i", src, "-g", strconv.Itoa(fps), "-keyint_min", strconv.Itoa(fps)}
	switch codec {
	case H264:
		return rtsptest.FFmpeg(t, filepath.Join(dir, "clip.h264"), append(args, "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-sc_threshold", "0",
			"-x264-params", "repeat-headers=1", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-f", "h264")...)
	case VP8:
		return rtsptest.FFmpeg(t, filepath.Join(dir, "clip.ivf"), append(args, "-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime", "-cpu-used", "8", "-f", "ivf")...)
	}
	t.Fatalf("whiptest: no clip for codec %q", codec)
	return ""
}

// Options say what to publish where.
type Options struct {
	Codec string // H264 or VP8
	File  string // from MakeClip
	FPS   int    // frame rate of File
	Token string // bearer token, if the endpoint wants one
	// ICEServers, if set, are the publisher's STUN/TURN servers; with
	// RelayOnly it uses nothing but TURN relays, as behind a NAT that lets
	// no peer-to-peer traffic through.
	ICEServers []webrtc.ICEServer
	RelayOnly  bool
	// Audio adds an Opus track (silence) before the video, as browsers
	// with a microphone and OBS offer it.
	Audio bool
}

// Publisher is a connected WHIP publisher.
type Publisher struct {
	pc       *webrtc.PeerConnection
	location string
	token    string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	plis     atomic.Int64
	sent     atomic.Int64
	err      atomic.Value // error of the sending loop
	once     sync.Once
}

// mediaEngine registers only the given video codecs (nil: none) and,
// with audio, Opus.
func newAPI(videoMimes []string, audio bool) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for i, mime := range videoMimes {
		c := webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000, RTCPFeedback: fb}
		if mime == webrtc.MimeTypeH264 {
			c.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
		}
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: c, PayloadType: webrtc.PayloadType(96 + i)}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if audio {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
			PayloadType:        111,
		}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// Offer returns a complete (non-trickle) SDP offer of a peer sending one
// video track of mime (e.g. webrtc.MimeTypeVP9), or only audio when mime is
// "". The peer is closed: the offer is for tests of bad input.
func Offer(mime string) (string, error) {
	var videos []string
	if mime != "" {
		videos = []string{mime}
	}
	api, err := newAPI(videos, mime == "")
	if err != nil {
		return "", err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	defer pc.Close()
	kind, trackMime := webrtc.RTPCodecTypeVideo, mime
	if mime == "" {
		kind, trackMime = webrtc.RTPCodecTypeAudio, webrtc.MimeTypeOpus
	}
	tr, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: trackMime}, kind.String(), "whiptest")
	if err != nil {
		return "", err
	}
	if _, err := pc.AddTrack(tr); err != nil {
		return "", err
	}
	return offer(pc)
}

func offer(pc *webrtc.PeerConnection) (string, error) {
	o, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return "", errors.New("whiptest: ICE gathering took over 5s")
	}
	return pc.LocalDescription().SDP, nil
}

// StatusError is a WHIP POST that did not answer 201.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("whip: HTTP %d: %s", e.Code, e.Body) }

// Post sends an offer to a WHIP endpoint and returns the answer and the
// session's resource URL.
func Post(endpoint, token, sdp string) (answer, location string, err error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewBufferString(sdp))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", "", &StatusError{Code: resp.StatusCode, Body: string(b)}
	}
	loc, err := url.Parse(endpoint)
	if err != nil {
		return "", "", err
	}
	rel, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return "", "", fmt.Errorf("whip: 201 without a usable Location %q", resp.Header.Get("Location"))
	}
	return string(b), loc.ResolveReference(rel).String(), nil
}

// Publish connects to the WHIP endpoint (http://host/whip/<camera>) and
// sends o.File in a loop at o.FPS until Stop or Close.
func Publish(endpoint string, o Options) (*Publisher, error) {
	mime := map[string]string{H264: webrtc.MimeTypeH264, VP8: webrtc.MimeTypeVP8}[o.Codec]
	if mime == "" {
		return nil, fmt.Errorf("whiptest: unknown codec %q", o.Codec)
	}
	api, err := newAPI([]string{mime}, o.Audio)
	if err != nil {
		return nil, err
	}
	pcfg := webrtc.Configuration{ICEServers: o.ICEServers}
	if o.RelayOnly {
		pcfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(pcfg)
	if err != nil {
		return nil, err
	}
	var audio *webrtc.TrackLocalStaticSample
	if o.Audio {
		if audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "whiptest"); err == nil {
			_, err = pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		}
		if err != nil {
			pc.Close()
			return nil, err
		}
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: mime}, "video", "whiptest")
	if err != nil {
		pc.Close()
		return nil, err
	}
	sender, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		pc.Close()
		return nil, err
	}
	sdp, err := offer(pc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	answer, location, err := Post(endpoint, o.Token, sdp)
	if err != nil {
		pc.Close()
		return nil, err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		pc.Close()
		return nil, fmt.Errorf("whiptest: answer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{pc: pc, location: location, token: o.Token, cancel: cancel}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.readRTCP(sender.Sender())
	}()
	go func() {
		defer p.wg.Done()
		if err := p.send(ctx, track, o); err != nil && ctx.Err() == nil {
			p.err.Store(err)
		}
	}()
	if audio != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sendSilence(ctx, audio)
		}()
	}
	return p, nil
}

// Location is the session's resource URL.
func (p *Publisher) Location() string { return p.location }

// PLIs is how many keyframe requests (PLI) the publisher received.
func (p *Publisher) PLIs() int64 { return p.plis.Load() }

// Frames is how many frames were sent.
func (p *Publisher) Frames() int64 { return p.sent.Load() }

// Err is the error that stopped sending, if any.
func (p *Publisher) Err() error {
	err, _ := p.err.Load().(error)
	return err
}

func (p *Publisher) readRTCP(s *webrtc.RTPSender) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			if _, ok := pkt.(*rtcp.PictureLossIndication); ok {
				p.plis.Add(1)
			}
		}
	}
}

// send writes the clip as samples at its frame rate, looping.
func (p *Publisher) send(ctx context.Context, track *webrtc.TrackLocalStaticSample, o Options) error {
	frameDur := time.Second / time.Duration(max(o.FPS, 1))
	next := time.Now()
	wait := func() error {
		next = next.Add(frameDur)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
			return nil
		}
	}
	for ctx.Err() == nil {
		f, err := os.Open(o.File)
		if err != nil {
			return err
		}
		if o.Codec == H264 {
			err = p.sendH264(f, track, frameDur, wait)
		} else {
			err = p.sendVP8(f, track, frameDur, wait)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// sendSilence sends 20 ms Opus frames of silence until ctx is done.
func sendSilence(ctx context.Context, track *webrtc.TrackLocalStaticSample) {
	tick.Every(ctx, 20*time.Millisecond, func() bool {
		return track.WriteSample(media.Sample{Data: []byte{0xf8, 0xff, 0xfe}, Duration: 20 * time.Millisecond}) == nil
	})
}

func (p *Publisher) sendH264(f io.Reader, track *webrtc.TrackLocalStaticSample, frameDur time.Duration, wait func() error) error {
	r, err := h264reader.NewReader(f)
	if err != nil {
		return err
	}
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// Parameter sets and SEI travel with the next slice; a slice ends a frame.
		vcl := nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr
		d := time.Duration(0)
		if vcl {
			d = frameDur
		}
		if err := track.WriteSample(media.Sample{Data: nal.Data, Duration: d}); err != nil {
			return err
		}
		if vcl {
			p.sent.Add(1)
			if err := wait(); err != nil {
				return err
			}
		}
	}
}

func (p *Publisher) sendVP8(f io.Reader, track *webrtc.TrackLocalStaticSample, frameDur time.Duration, wait func() error) error {
	r, _, err := ivfreader.NewWith(f)
	if err != nil {
		return err
	}
	for {
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := track.WriteSample(media.Sample{Data: frame, Duration: frameDur}); err != nil {
			return err
		}
		p.sent.Add(1)
		if err := wait(); err != nil {
			return err
		}
	}
}

// Stop ends the session as a WHIP client does: DELETE on its resource,
// then closing the peer. It returns the DELETE's status code.
func (p *Publisher) Stop() (int, error) {
	req, err := http.NewRequest(http.MethodDelete, p.location, nil)
	if err != nil {
		return 0, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := http.DefaultClient.Do(req)
	p.Close()
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Close drops the peer without telling the server (a publisher that
// vanished), and waits for the publisher's goroutines.
// Mute stops sending media but keeps the connection up, as a publisher
// that hung (or one that crashed, seen from the server until ICE notices).
func (p *Publisher) Mute() { p.cancel() }

func (p *Publisher) Close() {
	p.once.Do(func() {
		p.cancel()
		_ = p.pc.Close()
		p.wg.Wait()
	})
}
