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
		if !strings.Contains(raw, "://") && !strings.Contains(raw, "@") {
			return raw // a file path url.Parse refuses ("100%.mp4"), with no credentials to hide
		}
		// A URL that does not parse may still carry userinfo; never echo it.
		if i := strings.Index(raw, "://"); i >= 0 && strings.Contains(raw[i+3:], "@") {
			return raw[:i+3] + "xxxxx@<unparseable url>"
		}
		return "<unparseable url>"
	}
	if u.User == nil && u.Host == "" {
		// A typo'd URL ("rtsp:/admin:pw@cam/s", "admin:pw@cam/s") parses
		// with its credentials in the path or the opaque part.
		raw = maskBareUserinfo(raw, u.Scheme)
		if u, err = url.Parse(raw); err != nil {
			return "<unparseable url>"
		}
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		raw = u.String()
	}
	return RedactParams(raw)
}

// maskBareUserinfo hides what looks like userinfo outside a URL's
// authority, in what a mistyped RTSP URL looks like ("rtsp:/user:pw@cam",
// "rtsp//user:pw@cam", "user:pw@cam/s"): the text before an '@' (before
// any query) back to the '/' or scheme before it, when it holds a ':'
// (user:password) or the input has a scheme. The user name before a ':'
// is kept, as RedactURL keeps it. File paths and the file, synthetic and
// whip schemes, which have no userinfo, are left as they are.
func maskBareUserinfo(raw, scheme string) string {
	switch strings.ToLower(scheme) {
	case "file", "synthetic", "whip":
		return raw
	}
	head := raw
	if q := strings.IndexAny(raw, "?#"); q >= 0 {
		head = raw[:q]
	}
	at := strings.IndexByte(head, '@')
	if at < 0 {
		return raw
	}
	start := strings.LastIndexByte(head[:at], '/') + 1
	switch {
	case scheme == "":
		// A path: only "//user:pw@…" or "rtsp//user:pw@…" up front.
		if p := strings.ToLower(strings.TrimRight(head[:start], "/")); p != "" && p != "rtsp" && p != "rtsps" {
			return raw
		}
	case start == 0:
		start = len(scheme) + 1
	}
	// A password may hold an unencoded '@': the userinfo ends at the last
	// '@' before the next '/'.
	end := strings.LastIndexByte(head, '@')
	if slash := strings.IndexByte(head[at:], '/'); slash >= 0 {
		end = at + strings.LastIndexByte(head[at:at+slash], '@')
	}
	info := head[start:end]
	user, _, hasPass := strings.Cut(info, ":")
	switch {
	case hasPass:
		info = user + ":xxxxx"
	case scheme != "":
		info = "xxxxx"
	default:
		return raw
	}
	return raw[:start] + info + raw[end:]
}

// secretKeys are parts of query parameter names whose values are hidden:
// cameras and NVRs take credentials there too (?user=admin&password=…,
// ?token=…).
var secretKeys = []string{"pass", "pwd", "token", "secret", "key", "auth", "sig", "credential"}

// RedactParams hides the values of secret-looking parameters in raw, a
// URL or what was meant to be one, parsed or not: in the query
// (?user=admin&password=…) and in the path (…/s;password=…, which some
// cameras take), keeping everything else as it is.
func RedactParams(raw string) string {
	path, query, hasQuery := strings.Cut(raw, "?")
	path = maskParams(path, false, ";&", ";&/#")
	if !hasQuery {
		return path
	}
	return path + "?" + maskParams(query, true, "&;", "&;#")
}

// maskParams hides secret-looking name=value parameters of s: each begins
// after a byte of starts (or at the start of s, if first), and ends before
// a byte of ends.
func maskParams(s string, first bool, starts, ends string) string {
	var b strings.Builder
	for i := 0; ; first = false {
		if !first {
			j := strings.IndexAny(s[i:], starts)
			if j < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			b.WriteString(s[i : i+j+1])
			i += j + 1
		}
		end := len(s)
		if k := strings.IndexAny(s[i:], ends); k >= 0 {
			end = i + k
		}
		param := s[i:end]
		if name, _, hasValue := strings.Cut(param, "="); hasValue && secretName(name) {
			param = name + "=xxxxx"
		}
		b.WriteString(param)
		i = end
	}
}

// secretName reports whether a parameter name looks like it holds a secret.
func secretName(name string) bool {
	key, err := url.QueryUnescape(name)
	if err != nil {
		key = name
	}
	key = strings.ToLower(key)
	return slices.ContainsFunc(secretKeys, func(s string) bool { return strings.Contains(key, s) })
}
