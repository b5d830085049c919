//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presence-router/presence-router/e2e/harness"
)

// deployBlock is a block of docs/deploy.md that TestDeploy follows.
var deployBlock = regexp.MustCompile("(?s)<!-- deploy: (\\S+) -->\n```\\w*\n(.*?)```")

// deployDoc returns docs/deploy.md's blocks of a kind, in order.
func deployDoc(t *testing.T, kind string) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range deployBlock.FindAllStringSubmatch(string(doc), -1) {
		if m[1] == kind {
			blocks = append(blocks, m[2])
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("docs/deploy.md has no %q block", kind)
	}
	return blocks
}

// podman runs podman with this machine's settings (containers.conf named
// by CONTAINERS_CONF: runc, cgroupfs, no default ulimits).
type podman struct {
	t    *testing.T
	conf string
}

func (p podman) run(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newPodman returns podman, or skips the test with the reason when no
// container runtime can run here.
func newPodman(t *testing.T) podman {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("no container runtime: podman is not installed (make image installs it as root with buildah; on other machines: apt-get install podman)")
	}
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := podman{t: t, conf: conf}
	if out, err := p.run("run", "--rm", "--network", "host", "--entrypoint", "/usr/bin/presence-router", os.Getenv("PR_IMAGE"), "--version"); err != nil {
		t.Skipf("no container runtime can run here (podman run of %s failed: %v: %s)", os.Getenv("PR_IMAGE"), err, strings.TrimSpace(out))
	}
	return p
}

// TestDeploy follows docs/deploy.md into a Synapse that make run did not
// set up: the image run with podman on the host network with its data on a
// volume (first start: a config to edit; second: the registration; then
// it runs), the adapter installed from the wheel into a new venv, Synapse's
// homeserver.yaml with the doc's block. A command routes presence, and the
// container keeps its state across a stop and a start.
func TestDeploy(t *testing.T) {
	image, wheel := os.Getenv("PR_IMAGE"), os.Getenv("PR_WHEEL")
	if image == "" || wheel == "" {
		t.Skip("PR_IMAGE and PR_WHEEL are not set: run it through make test, which builds the image and the wheel (make image, make wheel)")
	}
	pm := newPodman(t)
	began := time.Now()

	// The image: a non-root user, no shell.
	if out, err := pm.run("image", "inspect", "--format", "{{.Config.User}}", image); err != nil || strings.TrimSpace(out) != "1337:1337" {
		t.Errorf("the image's user is %q (%v); want 1337:1337", strings.TrimSpace(out), err)
	}
	if out, err := pm.run("run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image, "-c", "true"); err == nil {
		t.Errorf("the image holds a shell: %s", out)
	}

	// Synapse's own environment: a new venv with Synapse, and the adapter
	// from the wheel.
	venv := filepath.Join(t.TempDir(), "synapse-env")
	for _, args := range [][]string{
		{"python3", "-m", "venv", venv},
		{filepath.Join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "matrix-synapse==" + os.Getenv("PR_SYNAPSE_VERSION")},
		{filepath.Join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "--no-deps", wheel},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Logf("Synapse's venv with the adapter's wheel ready after %s", time.Since(began).Round(time.Second))

	// The doc's podman commands, with this test's own names.
	suffix := fmt.Sprintf("-e2e-%d", os.Getpid())
	volume, container := "presence-router-data"+suffix, "presence-router"+suffix
	names := strings.NewReplacer("presence-router-data", volume, "--name presence-router ", "--name "+container+" ", "presence-router:latest", image)
	var commands [][]string
	for _, block := range deployDoc(t, "podman") {
		for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
			fields := strings.Fields(names.Replace(line))
			if fields[0] != "podman" {
				t.Fatalf("docs/deploy.md's podman block has %q", line)
			}
			commands = append(commands, fields[1:])
		}
	}
	if len(commands) != 4 {
		t.Fatalf("docs/deploy.md shows %d podman commands; the test follows 4 (create the volume, first start, second start, run)", len(commands))
	}
	t.Cleanup(func() {
		_, _ = pm.run("rm", "-f", "-t", "2", container)
		_, _ = pm.run("volume", "rm", "-f", volume)
	})
	step := func(i int, want string) string {
		t.Helper()
		out, err := pm.run(commands[i]...)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("podman %s: %v; want it to say %q:\n%s", strings.Join(commands[i], " "), err, want, out)
		}
		return out
	}
	step(0, volume)
	step(1, "Wrote /data/config.yaml with placeholders")
	mount, err := pm.run("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
	if err != nil {
		t.Fatal(err)
	}
	mount = strings.TrimSpace(mount)

	// The operator edits what the first start named.
	synapsePort, _ := harness.FreePort()
	routerPort, _ := harness.FreePort()
	routerURL := fmt.Sprintf("http://127.0.0.1:%d", routerPort)
	configPath := filepath.Join(mount, "config.yaml")
	data, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"address: http://127.0.0.1:8008", fmt.Sprintf("address: http://127.0.0.1:%d", synapsePort),
		"domain: example.org", "domain: "+harness.ServerName,
		"address: http://127.0.0.1:29330", "address: "+routerURL,
		"port: 29330", fmt.Sprintf("port: %d", routerPort),
		`control_room: "#presence-control:example.org"`, `control_room: "#control:`+harness.ServerName+`"`,
		`"@admin:example.org"`, `"@admin:`+harness.ServerName+`"`,
	).Replace(string(data))
	if err = os.WriteFile(configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	step(2, "Wrote the appservice registration to /data/registration.yaml")

	// Synapse, set up by this test from the doc's homeserver.yaml block.
	e := newEnvWith(t, harness.Options{Plain: true, SynapsePort: synapsePort})
	e.stack.Opts.Python = filepath.Join(venv, "bin", "python")
	registration := e.stack.Path("presence-router-registration.yaml")
	reg, err := os.ReadFile(filepath.Join(mount, "registration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(registration, reg, 0o600); err != nil {
		t.Fatal(err)
	}
	edited, _ := os.ReadFile(configPath)
	token := regexp.MustCompile(`(?m)^\s+token: "?([^"\s]+)"?$`).FindStringSubmatch(string(edited))
	if token == nil {
		t.Fatalf("no router.token in the config after the second start:\n%s", edited)
	}
	block := strings.NewReplacer(
		"/etc/synapse/presence-router-registration.yaml", registration,
		"http://127.0.0.1:29330", routerURL,
		`"router.token from /data/config.yaml"`, token[1],
	).Replace(deployDoc(t, "homeserver.yaml")[0])
	hs, err := os.OpenFile(e.stack.Path("homeserver.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = hs.WriteString(block)
	_ = hs.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err = e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}

	// presence-router from the image, for good.
	step(3, "")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := pm.run("logs", "--tail", "60", container)
			t.Logf("--- the container's log ---\n%s", out)
		}
	})
	waitCtx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	err = harness.WaitHTTP(waitCtx, routerURL+"/_matrix/mau/live")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	e.populate()
	if log, err := os.ReadFile(e.stack.Path("synapse.log")); err != nil || !strings.Contains(string(log), "Connected to presence-router at "+routerURL) {
		t.Errorf("Synapse's log does not show the adapter's first contact (%v)", err)
	}
	if reply := e.command("admin", "!presence always-send add @dash:"+harness.ServerName); reply.Reaction != "✅" {
		t.Fatalf("reply = %+v", reply)
	}
	e.setPresence("alice", "online", "alice through the container")
	if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice through the container", 10*time.Second); !ok {
		t.Fatalf("dash did not receive alice's presence; got %+v", e.syncs["dash"].Presence())
	}

	// Stopped and started again, it keeps its state (the volume).
	for _, args := range [][]string{{"stop", "-t", "10", container}, {"start", container}} {
		if out, err := pm.run(args...); err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	waitCtx, cancel = context.WithTimeout(e.ctx, 30*time.Second)
	err = harness.WaitHTTP(waitCtx, routerURL+"/_matrix/mau/ready")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if list := e.command("admin", "!presence always-send list"); !strings.Contains(list.Body, "@dash:"+harness.ServerName) {
		t.Errorf("after a stop and a start the list is %q", list.Body)
	}
	t.Logf("the deployment took %s", time.Since(began).Round(time.Second))
}

// A host directory the image's user cannot write: the first start says so
// plainly, with what to do, and fails.
func TestDeploy_UnwritableDataSaysWhatToDo(t *testing.T) {
	image := os.Getenv("PR_IMAGE")
	if image == "" {
		t.Skip("PR_IMAGE is not set: run it through make test, which builds the image (make image)")
	}
	pm := newPodman(t)
	dir := t.TempDir() // root's, mode 0755: UID 1337 cannot write
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := pm.run("run", "--rm", "--network", "host", "-v", dir+":/data", image)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(out, "is not writable by this process (UID 1337") || !strings.Contains(out, "chown -R 1337:1337") {
		t.Fatalf("podman run with an unwritable /data: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("it wrote into the directory anyway: %v", entries)
	}
}
