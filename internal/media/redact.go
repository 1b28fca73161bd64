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
	if u.User == nil && u.Host == "" {
		// A typo'd URL ("rtsp:/admin:pw@cam/s", "admin:pw@cam/s") parses
		// with its credentials in the path or the opaque part.
		raw = maskBareUserinfo(raw, u.Scheme != "")
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
	return redactParams(raw)
}

// maskBareUserinfo hides what looks like userinfo outside a URL's
// authority: the text before an '@' back to the '/' or scheme before it,
// when it holds a ':' (user:password) or the input has a scheme. The user
// name before a ':' is kept, as RedactURL keeps it.
func maskBareUserinfo(raw string, hasScheme bool) string {
	at := strings.IndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := strings.LastIndexByte(raw[:at], '/') + 1
	if start == 0 && hasScheme {
		start = strings.IndexByte(raw, ':') + 1
	}
	// A password may hold an unencoded '@': the userinfo ends at the last
	// '@' before the next '/'.
	end := at
	if slash := strings.IndexByte(raw[at:], '/'); slash >= 0 {
		end = at + strings.LastIndexByte(raw[at:at+slash], '@')
	} else {
		end = strings.LastIndexByte(raw, '@')
	}
	info := raw[start:end]
	user, _, hasPass := strings.Cut(info, ":")
	switch {
	case hasPass:
		info = user + ":xxxxx"
	case hasScheme:
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

// redactParams hides the values of secret-looking parameters, in the
// query (?user=admin&password=…) and in the path (…/s;password=…, which
// some cameras take), keeping everything else as it is.
func redactParams(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); {
		j := strings.IndexAny(raw[i:], "?&;")
		if j < 0 {
			b.WriteString(raw[i:])
			break
		}
		j += i + 1 // the parameter starts after its separator
		b.WriteString(raw[i:j])
		end := len(raw)
		if k := strings.IndexAny(raw[j:], "&;#"); k >= 0 {
			end = j + k
		}
		param := raw[j:end]
		if name, _, hasValue := strings.Cut(param, "="); hasValue && secretName(name) {
			param = name + "=xxxxx"
		}
		b.WriteString(param)
		i = end
	}
	return b.String()
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
