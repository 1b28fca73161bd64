package media

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://admin:pw@10.0.0.1:554/s": "rtsp://admin:xxxxx@10.0.0.1:554/s",
		"rtsp://token@cam/s":             "rtsp://xxxxx@cam/s",
		"rtsp://cam/s":                   "rtsp://cam/s",
		"/videos/a.mp4":                  "/videos/a.mp4",
		"/videos/100%.mp4":               "/videos/100%.mp4", // a path url.Parse refuses: nothing in it to hide
		"clips/ü 50%.mp4":                "clips/ü 50%.mp4",
		"admin:pw%@cam/s":                "admin:xxxxx@cam/s",
		"rtsp://u:p w%zz@cam/":           "rtsp://xxxxx@<unparseable url>",
		"rtsp://nvr/ch1?user=admin&password=s3cret&channel=2": "rtsp://nvr/ch1?user=admin&password=xxxxx&channel=2",
		"rtsp://a:b@nvr/s?Token=abc&api_key=k&pwd=1&sig":      "rtsp://a:xxxxx@nvr/s?Token=xxxxx&api_key=xxxxx&pwd=xxxxx&sig",
		"rtsp://cam/s?channel=1&subtype=0":                    "rtsp://cam/s?channel=1&subtype=0",
		// Every secret-looking key, inside a longer name too.
		"rtsp://cam/s?auth=x":          "rtsp://cam/s?auth=xxxxx",
		"rtsp://cam/s?client_secret=x": "rtsp://cam/s?client_secret=xxxxx",
		"rtsp://cam/s?credential=x":    "rtsp://cam/s?credential=xxxxx",
		// A percent-encoded name is read decoded: p%61ss is "pass", which
		// the name as written does not contain.
		"rtsp://cam/s?pass%77ord=x":        "rtsp://cam/s?pass%77ord=xxxxx",
		"rtsp://cam/s?p%61ssword=x&a=1":    "rtsp://cam/s?p%61ssword=xxxxx&a=1",
		"rtsp://cam/s?%74%6Fken=x":         "rtsp://cam/s?%74%6Fken=xxxxx",
		"rtsp://h/x;%70wd=SECRET15?chan=1": "rtsp://h/x;%70wd=xxxxx?chan=1",
		// Typos that leave the credentials outside the authority.
		"rtsp:/viewer:TopSecret99@192.0.2.10/s": "rtsp:/viewer:xxxxx@192.0.2.10/s",
		"rtsp:u:pw@h":                           "rtsp:u:xxxxx@h",
		"rtsp:/TOKEN@h/s":                       "rtsp:/xxxxx@h/s",
		"rtsp//admin:PLAINPW@192.0.2.10/s":      "rtsp//admin:xxxxx@192.0.2.10/s",
		"admin:PLAINPW2@192.0.2.10/s":           "admin:xxxxx@192.0.2.10/s",
		"rtsp:/u:p@ss@h/s@x":                    "rtsp:/u:xxxxx@h/s@x",
		"/videos/cam@2x.mp4":                    "/videos/cam@2x.mp4",
		"rtsp://cam/live@main":                  "rtsp://cam/live@main",
		// Path parameters.
		"rtsp://h/x;password=SECRET14":           "rtsp://h/x;password=xxxxx",
		"rtsp://h/x;user=a;pwd=S&token=T#frag":   "rtsp://h/x;user=a;pwd=xxxxx&token=xxxxx#frag",
		"rtsp://h/s;x=1?password=foo":            "rtsp://h/s;x=1?password=xxxxx",
		"rtsp://h/s;transport=tcp?token=abc&x=1": "rtsp://h/s;transport=tcp?token=xxxxx&x=1",
		"rtsp://h/s?token=a/b?c&x=1":             "rtsp://h/s?token=xxxxx&x=1",
		// Not userinfo: left as they are.
		"file:///videos/cam@2x.mp4":        "file:///videos/cam@2x.mp4",
		"/videos/cam:1@2x.mp4":             "/videos/cam:1@2x.mp4",
		"synthetic://?seed=1&label=a@b":    "synthetic://?seed=1&label=a@b",
		"rtsp://cam/s?user=me@example.com": "rtsp://cam/s?user=me@example.com",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
