package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"
)

// WHIP video codecs: what decode can open from RTP (FFmpeg's H.264 and VP8
// depacketizers), named as bus.RTPCodecHeader carries them.
const (
	CodecH264 = "h264"
	CodecVP8  = "vp8"
)

// ErrBadOffer marks an SDP offer the WHIP endpoint cannot take.
var ErrBadOffer = errors.New("bad WHIP offer")

// checkOffer parses an SDP offer and checks it has exactly one video track
// with a codec decode can open (H.264 packetization-mode 1, or VP8). It
// returns those codecs in the offer's order of preference.
func checkOffer(raw []byte) ([]string, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("%w: empty body (a WHIP POST carries an SDP offer)", ErrBadOffer)
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: not an SDP session description: %v", ErrBadOffer, err)
	}
	var videos []*sdp.MediaDescription
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media == "video" && m.MediaName.Port.Value != 0 {
			videos = append(videos, m)
		}
	}
	switch len(videos) {
	case 0:
		return nil, fmt.Errorf("%w: the offer has no video track (send one H.264 or VP8 video track)", ErrBadOffer)
	case 1:
	default:
		return nil, fmt.Errorf("%w: the offer has %d video tracks; a camera takes one", ErrBadOffer, len(videos))
	}
	if dir := direction(videos[0]); dir == "recvonly" || dir == "inactive" {
		return nil, fmt.Errorf("%w: the video track is %s; a WHIP publisher sends (sendonly or sendrecv)", ErrBadOffer, dir)
	}
	var ok, seen []string
	for _, c := range offerCodecs(videos[0]) {
		name := strings.ToLower(c.Name)
		switch {
		case name == CodecVP8:
			ok = append(ok, CodecVP8)
		case name == CodecH264 && packetizationMode(c.Fmtp) == "1":
			ok = append(ok, CodecH264)
		case name == CodecH264:
			seen = append(seen, "H264 packetization-mode="+packetizationMode(c.Fmtp))
		case name == "rtx" || name == "red" || name == "ulpfec" || name == "flexfec-03":
			// repair formats that go with a media codec
		default:
			seen = append(seen, c.Name)
		}
	}
	if len(ok) == 0 {
		slices.Sort(seen)
		return nil, fmt.Errorf("%w: unsupported video codec(s) %s; send H.264 (packetization-mode=1) or VP8",
			ErrBadOffer, strings.Join(slices.Compact(seen), ", "))
	}
	return slices.Compact(ok), nil
}

func direction(m *sdp.MediaDescription) string {
	for _, d := range []string{"sendonly", "recvonly", "sendrecv", "inactive"} {
		if _, ok := m.Attribute(d); ok {
			return d
		}
	}
	return "sendrecv"
}

// offerCodecs lists a media section's formats with their rtpmap and fmtp,
// in the order of the m= line.
func offerCodecs(m *sdp.MediaDescription) []sdp.Codec {
	byPT := map[string]*sdp.Codec{}
	var order []string
	for _, f := range m.MediaName.Formats {
		byPT[f] = &sdp.Codec{Name: "payload type " + f}
		order = append(order, f)
	}
	for _, a := range m.Attributes {
		pt, rest, _ := strings.Cut(a.Value, " ")
		c := byPT[pt]
		if c == nil {
			continue
		}
		switch a.Key {
		case "rtpmap":
			name, _, _ := strings.Cut(rest, "/")
			c.Name = name
		case "fmtp":
			c.Fmtp = rest
		}
	}
	out := make([]sdp.Codec, 0, len(order))
	for _, pt := range order {
		out = append(out, *byPT[pt])
	}
	return out
}

// packetizationMode is the H.264 packetization-mode of an fmtp line ("0"
// when absent, as RFC 6184 says).
func packetizationMode(fmtp string) string {
	for p := range strings.SplitSeq(fmtp, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && k == "packetization-mode" {
			return v
		}
	}
	return "0"
}
