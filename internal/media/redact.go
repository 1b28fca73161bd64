// Package media holds source-URL helpers shared by ingest and decode.
package media

import (
	"net/url"
	"strings"
)

// RedactURL hides the credentials of a source URL so that it can be logged,
// returned in errors or shown in status: the password (or, with no
// password, the whole userinfo, which may be a token) becomes "xxxxx".
// Input that does not parse is replaced entirely rather than echoed.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// A URL that does not parse may still carry userinfo; never echo it.
		if i := strings.Index(raw, "://"); i >= 0 && strings.Contains(raw[i+3:], "@") {
			return raw[:i+3] + "xxxxx@<unparseable url>"
		}
		return "<unparseable url>"
	}
	if u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else {
		u.User = url.User("xxxxx")
	}
	return u.String()
}
