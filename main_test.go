package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRun_BrokenConfigNamesTheKey(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	base := func(hs, token, db string, port int) string {
		return "homeserver: {address: \"" + hs + "\", domain: example.org}\n" +
			"appservice: {address: \"http://127.0.0.1:1\", hostname: 127.0.0.1, port: " + itoa(port) + ", as_token: " + token + ", hs_token: bbbbbbbbbbbbbbbb}\n" +
			"bot: {control_room: \"#c:example.org\", admins: [\"@admin:example.org\"]}\n" +
			"router: {token: cccccccccccccccc}\n" +
			"database: {path: \"" + db + "\"}\n"
	}
	goodDB := filepath.Join(dir, "ok.db")
	tests := []struct {
		name, config, key string
	}{
		{"missing homeserver", base("", "aaaaaaaaaaaaaaaa", goodDB, 1), "homeserver.address"},
		{"placeholder token", base("http://127.0.0.1:8008", "generate-with-g", goodDB, 1), "appservice.as_token"},
		{"unreadable database path", base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", filepath.Join(dir, "missing", "x.db"), 1), "database.path"},
		{"port in use", base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", goodDB, busyPort), "appservice.port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			err := run(path)
			if err == nil || !strings.Contains(err.Error(), tt.key) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("run = %v; want a one-line error naming %s", err, tt.key)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
