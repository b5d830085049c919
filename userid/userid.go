// Package userid validates Matrix user IDs against the specification's
// grammar, with errors a chat user understands.
package userid

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"
)

// MaxLength is the largest user ID, in bytes, the spec allows.
const MaxLength = 255

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid user ID")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse checks s against the grammar @localpart:server_name. The localpart
// may use the historical characters (printable ASCII except ':'); the server
// name is a DNS name, an IPv4 address or a bracketed IPv6 literal, with an
// optional port.
func Parse(s string) (id.UserID, error) {
	_, server, err := split(s, "user IDs look like @name:example.org", "user ID")
	if err != nil {
		return "", err
	}
	if err := checkServerName(server); err != nil {
		return "", invalid("%q: %v", s, err)
	}
	return id.UserID(s), nil
}

// split checks what user IDs and patterns share (the length, the @ sigil,
// a non-empty localpart of printable ASCII, a :server part) and returns the
// two parts. example is the hint that errors give; what names s in them.
func split(s, example, what string) (localpart, server string, err error) {
	if len(s) > MaxLength {
		return "", "", invalid("%s is %d bytes; the limit is %d", what, len(s), MaxLength)
	}
	if !strings.HasPrefix(s, "@") {
		return "", "", invalid("%q is missing the @ sigil (%s)", s, example)
	}
	localpart, server, ok := strings.Cut(s[1:], ":")
	if !ok {
		return "", "", invalid("%q is missing the :server part (%s)", s, example)
	}
	if localpart == "" {
		return "", "", invalid("%q has an empty localpart", s)
	}
	for _, r := range localpart {
		if r < 0x21 || r > 0x7e {
			return "", "", invalid("localpart of %q contains the invalid character %q", s, r)
		}
	}
	return localpart, server, nil
}

func checkServerName(server string) error {
	if server == "" {
		return errors.New("empty server name")
	}
	host, port := server, ""
	if strings.HasPrefix(server, "[") {
		end := strings.IndexByte(server, ']')
		if end < 0 {
			return fmt.Errorf("invalid server name %q: unclosed IPv6 literal", server)
		}
		host, port = server[:end+1], server[end+1:]
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() {
			return fmt.Errorf("invalid server name %q: bad IPv6 literal", server)
		}
		if addr.Zone() != "" {
			// A zone (%eth0) names an interface of one machine; the
			// grammar's IPv6 literal has none.
			return fmt.Errorf("invalid server name %q: an IPv6 literal with a zone", server)
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return fmt.Errorf("invalid server name %q", server)
		}
		port = strings.TrimPrefix(port, ":")
		if strings.HasSuffix(server, ":") && port == "" {
			return fmt.Errorf("invalid port in server name %q", server)
		}
	} else {
		var hasPort bool
		host, port, hasPort = strings.Cut(server, ":")
		if hasPort && port == "" {
			return fmt.Errorf("invalid port in server name %q", server)
		}
		if host == "" || len(host) > 255 {
			return fmt.Errorf("invalid server name %q", server)
		}
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				return fmt.Errorf("invalid server name %q: character %q is not allowed", server, r)
			}
		}
	}
	if port != "" {
		if len(port) > 5 {
			return fmt.Errorf("invalid port %q", port)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
			return fmt.Errorf("invalid port %q", port)
		}
		if port[0] == '0' {
			// :00080 and :80 are one server: one spelling only, or the
			// same user would have two IDs (and a list entry a twin).
			return fmt.Errorf("invalid port %q: no leading zeros", port)
		}
	}
	return nil
}
