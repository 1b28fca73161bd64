package media

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://admin:pw@10.0.0.1:554/s": "rtsp://admin:xxxxx@10.0.0.1:554/s",
		"rtsp://token@cam/s":             "rtsp://xxxxx@cam/s",
		"rtsp://cam/s":                   "rtsp://cam/s",
		"/videos/a.mp4":                  "/videos/a.mp4",
		"rtsp://u:p w%zz@cam/":           "rtsp://xxxxx@<unparseable url>",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
