package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/presence-router/presence-router/config"
)

// exampleConfig is config.example.yaml, which the container image writes
// on its first start.
//
//go:embed config.example.yaml
var exampleConfig string

// containerStart is what the container image's entrypoint does with its
// data directory (--data-dir /data) before it runs, as mautrix's images do:
// on the first start it writes config.yaml with placeholders and says what
// to edit; with a config but no registration it generates the registration
// (-g) and says where; then it runs. It returns the config to run with, or
// run false when the operator has something to do first (a clean exit).
// Its messages go to out.
func containerStart(dir string, out io.Writer) (configPath string, run bool, err error) {
	if err = checkDataDir(dir); err != nil {
		return "", false, err
	}
	configPath = filepath.Join(dir, "config.yaml")
	registrationPath := filepath.Join(dir, "registration.yaml")
	if _, err = os.Stat(configPath); errors.Is(err, os.ErrNotExist) {
		text := strings.Replace(exampleConfig, "  path: presence-router.db", "  path: "+filepath.Join(dir, "presence-router.db"), 1)
		// Synapse reaches the container from outside it.
		text = strings.Replace(text, "  hostname: 127.0.0.1", "  hostname: 0.0.0.0", 1)
		if err = config.WriteSecretFile(configPath, []byte(text)); err != nil {
			return "", false, fmt.Errorf("failed to write %s: %w", configPath, err)
		}
		fmt.Fprintf(out, "Wrote %s with placeholders. Edit it: at least homeserver.address and homeserver.domain (your Synapse), "+
			"appservice.address (the URL Synapse uses to reach this container), bot.control_room and bot.admins. "+
			"Then start the container again: it writes the appservice registration next.\n", configPath)
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("failed to read %s: %w", configPath, err)
	}
	if _, err = os.Stat(registrationPath); errors.Is(err, os.ErrNotExist) {
		cfg, err := config.Load(configPath)
		if err != nil {
			return "", false, err
		}
		if cfg.Homeserver.Domain == "example.org" {
			return "", false, fmt.Errorf("%s still has the example's homeserver.domain (example.org): edit it first (homeserver.address, homeserver.domain, appservice.address, bot.control_room, bot.admins), then start the container again", configPath)
		}
		if err = generateRegistration(configPath, registrationPath); err != nil {
			return "", false, err
		}
		fmt.Fprintf(out, "\nWrote the appservice registration to %s. Add it to Synapse (app_service_config_files), load the adapter, restart Synapse, "+
			"then start the container again: it runs from then on.\n", registrationPath)
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("failed to read %s: %w", registrationPath, err)
	}
	return configPath, true, nil
}

// checkDataDir fails with what to do when dir is missing or this process
// cannot write there: an image cannot change a mounted directory's owner
// at run time, so the operator must.
func checkDataDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the data directory %s is missing: mount a volume there (podman run -v presence-router:%s ...)", dir, dir)
	}
	if !info.IsDir() {
		return fmt.Errorf("the data directory %s is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".presence-router-probe-*")
	if err != nil {
		uid, gid := os.Getuid(), os.Getgid()
		return fmt.Errorf("the data directory %s is not writable by this process (UID %d, GID %d), and a container cannot change its owner: "+
			"on the host, run chown -R %d:%d on the directory you mount there, or mount a named volume (podman volume create), which takes the image's owner", dir, uid, gid, uid, gid)
	}
	name := probe.Name()
	_ = probe.Close()
	return os.Remove(name)
}
