package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/tick"
)

// WHIPURL is the camera URL of a WebRTC camera: it has no address of its
// own, its frames come from whoever publishes to POST /whip/<camera>.
const WHIPURL = "whip://"

// Timeouts of a WHIP session.
const (
	// gatherTimeout bounds ICE candidate gathering before the answer.
	gatherTimeout = 5 * time.Second
	// pliMinGap rate-limits keyframe requests to one publisher.
	pliMinGap = 250 * time.Millisecond
	// A publisher that vanishes without DELETE is dropped when ICE fails:
	// no traffic for iceDisconnected, then iceFailed more.
	iceDisconnected = 3 * time.Second
	iceFailed       = 4 * time.Second
	iceKeepalive    = time.Second
	// staleAfter: a session that has received no video for this long (or
	// none since it began this long ago) gives way to a new POST for its
	// camera, so that a publisher that crashed and reconnects is not
	// refused until ICE notices.
	staleAfter = 2 * time.Second
	// staleUnstarted is staleAfter for a session that has had no video
	// yet: ICE through a TURN relay may take seconds to connect.
	staleUnstarted = 10 * time.Second
)

// WHIP is the WebRTC ingest endpoint (WHIP, RFC 9725). A publisher POSTs an
// SDP offer with one H.264 or VP8 video track to /whip/<camera>; the camera
// is registered with url whip:// if it does not exist, and the answer comes
// back with the session's resource in Location. The peer connection lives
// here, in ingest; its video RTP packets are published unchanged on
// patchline.rtp.<camera> for the camera's decode worker, which asks for
// keyframes on patchline.keyframe.<camera>. When the publisher leaves
// (DELETE, or ICE fails) the session ends and the camera goes offline; it
// stays registered until detached.
type WHIP struct {
	reg *Registry
	nc  *nats.Conn
	cfg config.WHIP
	log *slog.Logger

	wg     sync.WaitGroup
	keySub *nats.Subscription

	mu       sync.Mutex
	sessions map[string]*whipSession // by camera; nil while one is being set up
	closed   bool

	udpMux ice.UDPMux // whip.udp_port's socket(s), shared by every session; nil = a port each
}

// whipSession is one publisher's peer connection.
type whipSession struct {
	id     string
	camera string
	pc     *webrtc.PeerConnection
	ssrc   atomic.Uint32
	pt     atomic.Uint32
	last   atomic.Int64 // unix ns of the last PLI sent
	// begun and media (unix ns of the last video packet, 0 before the
	// first) say whether the session is stale.
	begun time.Time
	media atomic.Int64
	done  chan struct{}
	once  sync.Once
}

// NewWHIP returns the WHIP endpoint of reg, publishing RTP on nc. Close
// ends every session.
func NewWHIP(reg *Registry, nc *nats.Conn, cfg config.WHIP, log *slog.Logger) (*WHIP, error) {
	w := &WHIP{reg: reg, nc: nc, cfg: cfg, log: log, sessions: map[string]*whipSession{}}
	if cfg.UDPPort > 0 {
		mux, err := ice.NewMultiUDPMuxFromPort(cfg.UDPPort, ice.UDPMuxFromPortWithLoopback())
		if err != nil {
			return nil, fmt.Errorf("whip: udp_port %d: %w", cfg.UDPPort, err)
		}
		w.udpMux = mux
	}
	var err error
	w.keySub, err = nc.Subscribe(bus.KeyframePrefix+"*", func(m *nats.Msg) {
		w.mu.Lock()
		s := w.sessions[strings.TrimPrefix(m.Subject, bus.KeyframePrefix)]
		w.mu.Unlock()
		if s != nil {
			s.requestKeyframe(pliMinGap)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("whip: subscribe keyframe requests: %w", err)
	}
	reg.OnDetach(func(id string) { w.stop(id, "", "camera detached") })
	return w, nil
}

// Close ends every session and waits for their goroutines.
func (w *WHIP) Close() {
	_ = w.keySub.Unsubscribe()
	w.mu.Lock()
	w.closed = true
	var all []*whipSession
	for _, s := range w.sessions {
		if s != nil {
			all = append(all, s)
		}
	}
	w.mu.Unlock()
	for _, s := range all {
		w.end(s, "shutting down")
	}
	w.wg.Wait()
	if w.udpMux != nil {
		_ = w.udpMux.Close()
	}
}

// Sessions is the number of live sessions.
func (w *WHIP) Sessions() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.sessions {
		if s != nil {
			n++
		}
	}
	return n
}

// Handler serves WHIP with CORS for allowed origins outside bearer-token
// auth (token "" = none) and request bodies limited to maxBody bytes:
//
//	POST    /whip/{camera}            SDP offer → 201, SDP answer, Location
//	DELETE  /whip/{camera}/{session}  end the session → 200
//	PATCH   /whip/{camera}/{session}  trickle ICE: 405 (the answer carries every candidate)
//	OPTIONS /whip/{camera}            CORS preflight; Accept-Post
func (w *WHIP) Handler(token string, maxBody int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whip/{camera}", w.handlePublish)
	mux.HandleFunc("DELETE /whip/{camera}/{session}", w.handleStop)
	mux.HandleFunc("PATCH /whip/{camera}/{session}", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Allow", "DELETE, OPTIONS")
		writeJSON(rw, http.StatusMethodNotAllowed, apiError{"trickle ICE and ICE restarts are not supported: the answer carries every candidate"})
	})
	options := func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Accept-Post", "application/sdp")
		rw.WriteHeader(http.StatusNoContent)
	}
	mux.HandleFunc("OPTIONS /whip/{camera}", options)
	mux.HandleFunc("OPTIONS /whip/{camera}/{session}", options)
	return CORS(w.cfg.AllowedOrigins, RequireToken(token, LimitBody(maxBody, mux)))
}

func (w *WHIP) handlePublish(rw http.ResponseWriter, req *http.Request) {
	cam := req.PathValue("camera")
	if err := frame.ValidCameraID(cam); err != nil {
		writeJSON(rw, http.StatusBadRequest, apiError{"camera: " + err.Error()})
		return
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "application/sdp" {
		writeJSON(rw, http.StatusUnsupportedMediaType, apiError{fmt.Sprintf("Content-Type %q: a WHIP offer is application/sdp", req.Header.Get("Content-Type"))})
		return
	}
	var fps float64
	if q := req.URL.Query().Get("fps"); q != "" {
		f, err := strconv.ParseFloat(q, 64)
		if err != nil || !(f >= 0 && f <= config.MaxFPS) { // NaN too
			writeJSON(rw, http.StatusBadRequest, apiError{fmt.Sprintf("fps %q: want a number in 0..%d", q, config.MaxFPS)})
			return
		}
		fps = f
	}
	offer, err := io.ReadAll(req.Body)
	if err != nil {
		bodyError(rw, err)
		return
	}
	codecs, err := checkOffer(offer)
	if err != nil {
		writeJSON(rw, http.StatusBadRequest, apiError{err.Error()})
		return
	}

	// The camera first (its kind and fps are checked there), so that a
	// refused POST ends nothing.
	created, err := w.ensureCamera(req.Context(), cam, fps)
	if err != nil {
		writeErr(rw, err)
		return
	}
	undo := func() { // a camera this POST registered goes if no session comes of it
		if created {
			if derr := w.reg.Detach(context.WithoutCancel(req.Context()), cam); derr != nil {
				w.log.Warn("whip: removing camera after a failed offer", "camera", cam, "err", derr)
			}
		}
	}

	// Reserve the camera: one publisher at a time. A session that has
	// stopped sending (its publisher crashed and is reconnecting) gives way
	// at once instead of when ICE gives up on it.
	w.mu.Lock()
	old, busy := w.sessions[cam]
	var evict *whipSession
	if busy && old != nil && old.stale(time.Now()) {
		evict, busy = old, false
	}
	if !busy && !w.closed {
		w.sessions[cam] = nil
	}
	closed := w.closed
	w.mu.Unlock()
	if evict != nil && !closed {
		w.end(evict, "replaced by a new publisher") // leaves the reservation: it is not evict
	}
	switch {
	case closed:
		undo()
		writeJSON(rw, http.StatusServiceUnavailable, apiError{"shutting down"})
		return
	case busy:
		undo()
		rw.Header().Set("Retry-After", strconv.Itoa(int(staleAfter/time.Second)))
		writeJSON(rw, http.StatusConflict, apiError{fmt.Sprintf(
			"camera %s is receiving from another WHIP publisher (it gives way %s after its last packet, or at a DELETE of its session)", cam, staleAfter)})
		return
	}
	defer func() { // drop the reservation unless a session took it
		w.mu.Lock()
		if s, ok := w.sessions[cam]; ok && s == nil {
			delete(w.sessions, cam)
		}
		w.mu.Unlock()
	}()

	s, answer, err := w.newSession(cam, offer)
	if err == nil && !w.register(s) {
		err = errors.New("shutting down")
	}
	if err != nil {
		undo()
		writeErr(rw, err)
		return
	}
	w.log.Info("whip: publisher connected", "camera", cam, "session", s.id, "codecs", codecs, "remote", req.RemoteAddr)
	rw.Header().Set("Location", "/whip/"+cam+"/"+s.id)
	rw.Header().Set("ETag", `"`+s.id+`"`)
	for _, l := range w.iceLinks() {
		rw.Header().Add("Link", l)
	}
	rw.Header().Set("Content-Type", "application/sdp")
	rw.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(rw, answer)
}

func (w *WHIP) handleStop(rw http.ResponseWriter, req *http.Request) {
	cam, id := req.PathValue("camera"), req.PathValue("session")
	if !w.stop(cam, id, "publisher sent DELETE") {
		writeJSON(rw, http.StatusNotFound, apiError{fmt.Sprintf("no WHIP session %s for camera %s", id, cam)})
		return
	}
	rw.WriteHeader(http.StatusOK)
}

// stale reports whether s has received no video for staleAfter (or none
// since it began staleUnstarted ago).
func (s *whipSession) stale(now time.Time) bool {
	if ns := s.media.Load(); ns != 0 {
		return time.Duration(tick.Mono()-ns) >= staleAfter
	}
	return now.Sub(s.begun) >= staleUnstarted
}

// stop ends the session of cam (if id is not empty, only that session) and
// reports whether there was one.
func (w *WHIP) stop(cam, id, why string) bool {
	w.mu.Lock()
	s := w.sessions[cam]
	w.mu.Unlock()
	if s == nil || (id != "" && s.id != id) {
		return false
	}
	w.end(s, why)
	return true
}

// ensureCamera registers cam as a WHIP camera unless it is one already; a
// camera of another kind under that id is a conflict, and so is an fps
// other than the existing camera's (it is set when the camera is made).
func (w *WHIP) ensureCamera(ctx context.Context, cam string, fps float64) (created bool, err error) {
	v, err := w.reg.Get(ctx, cam)
	if err == nil {
		if !strings.EqualFold(v.URL, WHIPURL) { // a scheme in any case: WHIP:// is one too
			return false, fmt.Errorf("%w: camera %s has url %s; WHIP publishes to whip:// cameras only", ErrExists, cam, v.URL)
		}
		if fps > 0 && fps != v.FPS {
			has := "the default fps"
			if v.FPS > 0 {
				has = fmt.Sprintf("fps %g", v.FPS)
			}
			return false, fmt.Errorf("%w: camera %s exists with %s; ?fps=%g applies to a camera a publish registers (leave it out, or detach the camera first)", ErrExists, cam, has, fps)
		}
		return false, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	err = w.reg.Attach(ctx, config.Camera{ID: cam, URL: WHIPURL, FPS: fps})
	if errors.Is(err, ErrExists) { // attached meanwhile
		return w.ensureCamera(ctx, cam, fps)
	}
	return err == nil, err
}

// newAPI is a pion API that receives H.264 (packetization-mode 1) and VP8
// with NACK, RTCP reports and TWCC. Interceptors are per peer connection.
func (w *WHIP) newAPI() (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	codecs := []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96},
	}
	for i, profile := range []string{"42e01f", "42001f", "4d001f", "640032", "64001f"} {
		codecs = append(codecs, webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb,
				SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile,
			},
			PayloadType: webrtc.PayloadType(102 + 2*i),
		})
	}
	for _, c := range codecs {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	// Audio is accepted and thrown away: publishers that offer it (browsers
	// with a microphone, OBS) often put it first, and a rejected first
	// section is the BUNDLE tag, which fails the whole connection.
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeG722, ClockRate: 8000}, PayloadType: 9},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	} {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	if w.udpMux != nil {
		se.SetICEUDPMux(w.udpMux)
	}
	if len(w.cfg.PublicIPs) > 0 {
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: w.cfg.PublicIPs, AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteAppend,
		})
		if err != nil {
			return nil, err
		}
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// iceServers are whip.ice_servers for a peer connection.
func (w *WHIP) iceServers() []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(w.cfg.ICEServers))
	for _, s := range w.cfg.ICEServers {
		is := webrtc.ICEServer{URLs: s.URLs, Username: s.Username}
		if s.Credential != "" {
			is.Credential, is.CredentialType = s.Credential, webrtc.ICECredentialTypePassword
		}
		out = append(out, is)
	}
	return out
}

// iceLinks are whip.ice_servers as the Link header values of RFC 9725
// (section 4.6): one per URL, with the TURN credentials.
func (w *WHIP) iceLinks() []string {
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	var out []string
	for _, s := range w.cfg.ICEServers {
		for _, u := range s.URLs {
			l := "<" + u + `>; rel="ice-server"`
			if s.Username != "" {
				l += `; username="` + quote.Replace(s.Username) + `"; credential="` + quote.Replace(s.Credential) + `"; credential-type="password"`
			}
			out = append(out, l)
		}
	}
	return out
}

// newSession answers an offer. Errors wrap ErrInvalid when the offer is
// at fault.
func (w *WHIP) newSession(cam string, offer []byte) (*whipSession, string, error) {
	api, err := w.newAPI()
	if err != nil {
		return nil, "", fmt.Errorf("whip: %w", err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: w.iceServers()})
	if err != nil {
		return nil, "", fmt.Errorf("whip: peer connection: %w", err)
	}
	s := &whipSession{id: newSessionID(), camera: cam, pc: pc, begun: time.Now(), done: make(chan struct{})}
	pc.OnTrack(func(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
		if !w.track(s) {
			return
		}
		read := func() { w.forward(s, tr) }
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			read = func() { discard(tr) } // audio: read, so that its buffers and interceptors keep moving
		}
		go func() {
			defer w.wg.Done()
			read()
		}()
		go func() {
			defer w.wg.Done()
			drainRTCP(rcv)
		}()
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			w.end(s, "connection "+st.String())
		}
	})
	fail := func(code error, format string, args ...any) (*whipSession, string, error) {
		_ = pc.Close()
		return nil, "", fmt.Errorf("%w: "+format, append([]any{code}, args...)...)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return fail(ErrInvalid, "WebRTC rejected the offer: %v", err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(ErrInvalid, "cannot answer the offer: %v", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(ErrInvalid, "cannot answer the offer: %v", err)
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return fail(errors.New("whip"), "ICE gathering did not finish within %s", gatherTimeout)
	}
	if !answerHasVideo(pc) {
		return fail(ErrInvalid, "no video codec in common with the offer (want H.264 packetization-mode=1 or VP8)")
	}
	return s, pc.LocalDescription().SDP, nil
}

// register puts a new session in its camera's slot and starts asking for
// keyframes; it reports false (and ends the session) when the endpoint
// closed meanwhile.
func (w *WHIP) register(s *whipSession) bool {
	w.mu.Lock()
	closed := w.closed
	select {
	case <-s.done: // it failed already: leave the slot free
		w.mu.Unlock()
		return true
	default:
	}
	if !closed {
		w.sessions[s.camera] = s
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.keyframes(s)
		}()
	}
	w.mu.Unlock()
	if closed {
		w.end(s, "shutting down")
	}
	return !closed
}

// track adds the two goroutines of a track to the wait group unless the
// session or the endpoint is closed.
func (w *WHIP) track(s *whipSession) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	if w.closed {
		return false
	}
	w.wg.Add(2)
	return true
}

// answerHasVideo reports whether the answer accepts a video track.
func answerHasVideo(pc *webrtc.PeerConnection) bool {
	for _, t := range pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeVideo && t.Receiver() != nil && len(t.Receiver().GetParameters().Codecs) > 0 {
			return true
		}
	}
	return false
}

// forward publishes the track's RTP packets on patchline.rtp.<camera> until
// the session ends.
func (w *WHIP) forward(s *whipSession, tr *webrtc.TrackRemote) {
	codec := strings.ToLower(strings.TrimPrefix(tr.Codec().MimeType, "video/"))
	s.ssrc.Store(uint32(tr.SSRC()))
	s.pt.Store(uint32(tr.PayloadType()))
	s.requestKeyframe(0) // H.264 parameter sets come in-band with keyframes
	w.log.Info("whip: receiving video", "camera", s.camera, "codec", codec, "ssrc", uint32(tr.SSRC()))
	subject := bus.RTPSubject(s.camera)
	hdr := nats.Header{bus.RTPCodecHeader: []string{codec}}
	buf := make([]byte, 1600)
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if n < 12 || uint32(buf[1]&0x7f) != s.pt.Load() {
			continue // not a media packet of the negotiated codec
		}
		s.media.Store(tick.Mono())
		// PublishMsg copies the payload: buf can be reused.
		if err := w.nc.PublishMsg(&nats.Msg{Subject: subject, Data: buf[:n], Header: hdr}); err != nil {
			w.log.Debug("whip: publish rtp", "camera", s.camera, "err", err)
		}
	}
}

// discard reads a track (audio) until it ends, keeping nothing.
func discard(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1600)
	for {
		if _, _, err := tr.Read(buf); err != nil {
			return
		}
	}
}

// drainRTCP reads the receiver's incoming RTCP so the interceptors see it.
func drainRTCP(rcv *webrtc.RTPReceiver) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := rcv.Read(buf); err != nil {
			return
		}
	}
}

// keyframes asks the publisher for a keyframe every keyframe_interval, so a
// decoder that lost packets never waits long for a clean picture.
func (w *WHIP) keyframes(s *whipSession) {
	if w.cfg.KeyframeInterval <= 0 {
		<-s.done
		return
	}
	t := time.NewTicker(w.cfg.KeyframeInterval)
	defer t.Stop()
	// A tick right after a PLI that decode asked for adds nothing; the
	// previous tick's never holds this one back.
	gap := min(pliMinGap, w.cfg.KeyframeInterval/2)
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.requestKeyframe(gap)
		}
	}
}

// requestKeyframe sends a PLI unless one went less than minGap ago.
func (s *whipSession) requestKeyframe(minGap time.Duration) {
	ssrc := s.ssrc.Load()
	if ssrc == 0 {
		return
	}
	now := tick.Mono()
	last := s.last.Load()
	if now-last < int64(minGap) {
		return
	}
	if !s.last.CompareAndSwap(last, now) && minGap > 0 {
		return
	}
	_ = s.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
}

// end closes a session once: the peer connection, its slot, and a bye on
// the RTP subject so decode stops waiting for packets at once.
func (w *WHIP) end(s *whipSession, why string) {
	s.once.Do(func() {
		close(s.done)
		w.mu.Lock()
		if w.sessions[s.camera] == s {
			delete(w.sessions, s.camera)
		}
		w.mu.Unlock()
		_ = s.pc.Close()
		msg := &nats.Msg{Subject: bus.RTPSubject(s.camera), Header: nats.Header{bus.RTPByeHeader: []string{why}}}
		_ = w.nc.PublishMsg(msg)
		w.log.Info("whip: publisher left", "camera", s.camera, "session", s.id, "why", why)
	})
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
