package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/presence-router/presence-router/config"
)

// synapseSecrets returns Synapse's secrets for homeserver.yaml, made once
// and kept in the state directory (synapse-secrets.json), so that a kept
// directory keeps its logins and its registration secret across runs.
func (s *Stack) synapseSecrets() (map[string]string, error) {
	path := s.Path("synapse-secrets.json")
	secrets := map[string]string{}
	if data, err := os.ReadFile(path); err == nil {
		if err = json.Unmarshal(data, &secrets); err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", path, err)
		}
	}
	changed := false
	for _, name := range []string{"RegistrationSecret", "MacaroonSecret", "FormSecret"} {
		if secrets[name] == "" {
			secrets[name], changed = randomHex(16), true
		}
	}
	if changed {
		data, err := json.Marshal(secrets)
		if err != nil {
			return nil, fmt.Errorf("failed to encode %s: %w", path, err)
		}
		if err = os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("failed to write %s: %w", path, err)
		}
	}
	return secrets, nil
}

// writeGenerated writes a generated file, keeping an operator's edits: a
// copy of what was last generated is kept beside it (.name.generated).
// When the file differs from that copy (it was edited) and what is
// generated now is the same as then, the edited file is kept; when what is
// generated changed too (new ports), the edited file is moved to name.bak
// and replaced. Each such decision is added to s.Notes.
func (s *Stack) writeGenerated(name string, content []byte) error {
	path, generatedPath := s.Path(name), s.Path("."+name+".generated")
	current, currentErr := os.ReadFile(path)
	last, lastErr := os.ReadFile(generatedPath)
	edited := currentErr == nil && lastErr == nil && !bytes.Equal(current, last)
	switch {
	case edited && bytes.Equal(content, last):
		s.Notes = append(s.Notes, fmt.Sprintf("kept your edited %s", path))
		return nil
	case edited:
		if err := os.Rename(path, path+".bak"); err != nil {
			return fmt.Errorf("failed to keep a copy of %s: %w", path, err)
		}
		s.Notes = append(s.Notes, fmt.Sprintf("rewrote %s for the new settings; your edited one is %s.bak", path, path))
	case currentErr == nil && !bytes.Equal(current, content):
		s.Notes = append(s.Notes, fmt.Sprintf("rewrote %s for the new settings", path))
	}
	if err := os.WriteFile(path, content, 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return os.WriteFile(generatedPath, content, 0o600)
}

// updateRouterConfig brings an existing presence-router config in line with
// the options (addresses, ports, encryption), keeping everything else (its
// tokens and pickle key, an operator's edits). It reports whether anything
// changed.
func (s *Stack) updateRouterConfig() (bool, error) {
	path := s.Path("config.yaml")
	var cfg config.Config
	data, err := os.ReadFile(path)
	if err == nil {
		err = yaml.Unmarshal(data, &cfg)
	}
	if err != nil {
		return false, fmt.Errorf("failed to read %s: %w", path, err)
	}
	values := map[string]any{}
	set := func(key string, have, want any) {
		if have != want {
			values[key] = want
		}
	}
	set("homeserver.address", cfg.Homeserver.Address, s.SynapseURL)
	set("appservice.address", cfg.Appservice.Address, s.RouterURL)
	set("appservice.port", int(cfg.Appservice.Port), s.routerPorts[0])
	set("metrics.listen", cfg.Metrics.Listen, fmt.Sprintf("127.0.0.1:%d", s.metricsPorts[0]))
	set("encryption.enabled", cfg.Encryption.Enabled, s.Opts.Encryption)
	if s.Opts.Encryption {
		if cfg.Encryption.PickleKey == "" {
			values["encryption.pickle_key"] = config.Placeholder // -g makes it
		}
		if cfg.Encryption.VerificationLevel == "" {
			values["encryption.verification_level"] = "cross-signed-tofu"
		}
	}
	if len(values) == 0 {
		return false, nil
	}
	if err = config.SetValues(path, values); err != nil {
		return false, err
	}
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	s.Notes = append(s.Notes, fmt.Sprintf("set %s in %s for the new settings", strings.Join(keys, ", "), path))
	return true, nil
}
