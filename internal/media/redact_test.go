package media

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://admin:pw@10.0.0.1:554/s": "rtsp://admin:xxxxx@10.0.0.1:554/s",
		"rtsp://token@cam/s":             "rtsp://xxxxx@cam/s",
		"rtsp://cam/s":                   "rtsp://cam/s",
		"/videos/a.mp4":                  "/videos/a.mp4",
		"rtsp://u:p w%zz@cam/":           "rtsp://xxxxx@<unparseable url>",
		"rtsp://nvr/ch1?user=admin&password=s3cret&channel=2": "rtsp://nvr/ch1?user=admin&password=xxxxx&channel=2",
		"rtsp://a:b@nvr/s?Token=abc&api_key=k&pwd=1&sig":      "rtsp://a:xxxxx@nvr/s?Token=xxxxx&api_key=xxxxx&pwd=xxxxx&sig",
		"rtsp://cam/s?channel=1&subtype=0":                    "rtsp://cam/s?channel=1&subtype=0",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
