package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq" // the postgres driver
)

// Postgres is a PostgreSQL server started for a test in a temporary data
// directory, listening on 127.0.0.1 only, with trust authentication.
type Postgres struct {
	Port int
	Dir  string // holds data/ and the server log, postgres.log
	// temporary: Dir was made for this server and goes with it.
	temporary bool
	proc      *process
}

// PostgresBinDir finds the directory of initdb and postgres: Debian keeps
// them in /usr/lib/postgresql/<version>/bin (the newest is taken), other
// systems on PATH.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", errors.New("PostgreSQL is not installed: no initdb in /usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql; `make test` does it as root)")
}

// serviceUser is whom the database server runs as: PostgreSQL refuses to
// run as root, so root runs it as the postgres user (Debian's package makes
// one) or nobody; anyone else runs it as themselves.
func serviceUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, but there is neither a postgres nor a nobody user to run PostgreSQL as")
}

// StartPostgres starts a server on a free port, in a new temporary
// directory (outside any test's private one, which the server's user could
// not enter) that Stop removes.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	dir, err := os.MkdirTemp("", "presence-router-pg-")
	if err != nil {
		return nil, fmt.Errorf("failed to create the PostgreSQL directory: %w", err)
	}
	pg, err := startPostgres(ctx, dir, true)
	if err != nil {
		_ = os.RemoveAll(dir)
	}
	return pg, err
}

// StartPostgresIn starts a server on a free port with its data in dir
// (initialized on first use, kept by Stop); every directory above dir must
// be searchable by the server's user.
func StartPostgresIn(ctx context.Context, dir string) (*Postgres, error) {
	return startPostgres(ctx, dir, false)
}

func startPostgres(ctx context.Context, dir string, temporary bool) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serviceUser()
	if err != nil {
		return nil, err
	}
	if err = os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("failed to create the PostgreSQL directory: %w", err)
	}
	if err = os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("failed to create the PostgreSQL directory: %w", err)
	}
	if cred != nil {
		if err = os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("failed to hand %s to the database user: %w", dir, err)
		}
	}
	pg := &Postgres{Dir: dir, temporary: temporary}
	// A kept server keeps its port, which configs written before name.
	portFile := filepath.Join(dir, "port")
	if data, err := os.ReadFile(portFile); err == nil {
		pg.Port, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	if pg.Port == 0 {
		if pg.Port, err = FreePort(); err != nil {
			return nil, err
		}
		if err = os.WriteFile(portFile, []byte(strconv.Itoa(pg.Port)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("failed to write %s: %w", portFile, err)
		}
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
		initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := initdb.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb failed: %w\n%s", err, out)
		}
	}
	args := []string{"-D", data, "-p", strconv.Itoa(pg.Port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir, "-c", "max_connections=200"}
	if temporary {
		// Nothing here outlives the test, and a crash test kills
		// presence-router, not the database server.
		args = append(args, "-c", "fsync=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if pg.proc, err = startCmd(cmd, filepath.Join(dir, "postgres.log")); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := sql.Open("postgres", pg.URI("postgres"))
		if err == nil {
			err = db.PingContext(ctx)
			_ = db.Close()
		}
		if err == nil {
			return pg, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			pg.Stop()
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return nil, fmt.Errorf("PostgreSQL did not start: %w\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URI is the connection URI of database name.
func (pg *Postgres) URI(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.Port, name)
}

// EnsureDatabase creates database name, unless it exists, as Synapse needs
// it (UTF-8, C collation, from template0).
func (pg *Postgres) EnsureDatabase(ctx context.Context, name string) error {
	db, err := sql.Open("postgres", pg.URI("postgres"))
	if err != nil {
		return fmt.Errorf("failed to connect to PostgreSQL: %w", err)
	}
	defer db.Close()
	var exists bool
	if err = db.QueryRowContext(ctx, "SELECT EXISTS(SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("failed to look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = db.ExecContext(ctx, fmt.Sprintf(`CREATE DATABASE %q ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`, name))
	if err != nil {
		return fmt.Errorf("failed to create database %s: %w", name, err)
	}
	return nil
}

// Stop stops the server, and removes its directory if StartPostgres made it.
func (pg *Postgres) Stop() {
	stopProcess(pg.proc, syscall.SIGINT) // fast shutdown
	if pg.temporary {
		_ = os.RemoveAll(pg.Dir)
	}
}

// Redis is a redis-server started for a test, on 127.0.0.1, keeping
// nothing on disk.
type Redis struct {
	Port int
	proc *process
}

// StartRedis starts redis-server on a free port, logging to logPath.
func StartRedis(ctx context.Context, logPath string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not installed (Debian: apt-get install redis-server; `make test` does it as root)")
	}
	r := &Redis{}
	if r.Port, err = FreePort(); err != nil {
		return nil, err
	}
	r.proc, err = startProcess(bin, logPath, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if conn, err := dialTCP(r.Port); err == nil {
			_ = conn.Close()
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Stop()
			return nil, fmt.Errorf("redis-server did not start; see %s", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops redis-server.
func (r *Redis) Stop() { stopProcess(r.proc, syscall.SIGTERM) }
