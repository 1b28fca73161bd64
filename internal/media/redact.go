// Package media holds source-URL helpers shared by ingest and decode.
package media

import (
	"net/url"
	"slices"
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
	query, masked := redactQuery(u.RawQuery)
	if u.User == nil && !masked {
		return raw
	}
	u.RawQuery = query
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
	}
	return u.String()
}

// secretKeys are parts of query parameter names whose values are hidden:
// cameras and NVRs take credentials there too (?user=admin&password=…,
// ?token=…).
var secretKeys = []string{"pass", "pwd", "token", "secret", "key", "auth", "sig", "credential"}

// redactQuery hides the values of a raw query's secret-looking parameters,
// keeping the rest as it is, and reports whether it hid any.
func redactQuery(raw string) (string, bool) {
	if raw == "" {
		return raw, false
	}
	parts := strings.Split(raw, "&")
	masked := false
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		key, err := url.QueryUnescape(name)
		if err != nil {
			key = name
		}
		key = strings.ToLower(key)
		if hasValue && slices.ContainsFunc(secretKeys, func(s string) bool { return strings.Contains(key, s) }) {
			parts[i], masked = name+"=xxxxx", true
		}
	}
	return strings.Join(parts, "&"), masked
}
