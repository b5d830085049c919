//go:build e2e && bench

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestBenchGroupVsRoom measures, in a real Synapse, what sharing presence
// through one group costs against sharing it through one room that every
// user joined (the "directory room" a group replaces): Synapse's CPU time
// per presence update and per incremental /sync while every user syncs and
// some change their presence, as ratios group/room (target <= 1.0). The
// same users do both, the room first; they leave the room before the
// group is made. PR_GROUPROOM_USERS sets the number of users (default 60:
// with 200, every user syncing once a second saturated 2 shared cores and
// the room phase took two minutes instead of twenty seconds). Each phase
// lasts about 10 s; every user syncs throughout, so none goes offline.
func TestBenchGroupVsRoom(t *testing.T) {
	n := 60
	if v, err := strconv.Atoi(os.Getenv("PR_GROUPROOM_USERS")); err == nil && v > 0 {
		n = v
	}
	const updates, interval = 100, 100 * time.Millisecond
	e := startStack(t, false)
	names := make([]string, n)
	var wg sync.WaitGroup
	var lock sync.Mutex
	errs := make(chan error, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%04d", i)
	}
	sem := make(chan struct{}, 8)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cli, err := e.stack.User(e.ctx, name, "password-"+name)
			if err != nil {
				errs <- err
				return
			}
			s, err := harness.NewSyncer(e.ctx, cli)
			if err != nil {
				errs <- err
				return
			}
			lock.Lock()
			e.users[name], e.syncs[name] = cli, s
			lock.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	main := e.stack.Processes[0]

	// measure changes presence updates times, one every interval, by
	// random users, and returns Synapse's CPU per update and per /sync.
	measure := func(phase string) (perUpdate, perSync time.Duration) {
		time.Sleep(3 * time.Second) // settle
		syncs := func() int {
			total := 0
			for _, name := range names {
				total += e.syncs[name].Syncs()
			}
			return total
		}
		cpu0, err := main.CPUTime()
		if err != nil {
			t.Fatal(err)
		}
		s0 := syncs()
		start := time.Now()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range updates {
			name := names[rng.IntN(n)]
			if err := e.users[name].SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: fmt.Sprintf("%s %d", phase, i)}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * interval)))
		}
		time.Sleep(2 * time.Second) // the last updates' /syncs
		cpu1, err := main.CPUTime()
		if err != nil {
			t.Fatal(err)
		}
		cpu, synced := cpu1-cpu0, syncs()-s0
		// Someone must have received the presence: else the phase
		// measured nothing.
		received := 0
		for _, name := range names {
			for _, p := range e.syncs[name].Presence() {
				if strings.HasPrefix(p.StatusMsg, phase+" ") && p.Sender != id.NewUserID(name, harness.ServerName) {
					received++
				}
			}
		}
		if received < updates {
			t.Fatalf("%s: only %d presence events of others received for %d updates", phase, received, updates)
		}
		t.Logf("%s: Synapse CPU %s over %s, %d updates, %d /syncs, %d presence events received", phase, cpu, time.Since(start).Round(time.Millisecond), updates, synced, received)
		return cpu / updates, cpu / time.Duration(max(synced, 1))
	}

	resp, err := e.users["admin"].CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "directory"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := e.users[name].JoinRoom(e.ctx, string(resp.RoomID), nil); err != nil {
			t.Fatal(err)
		}
	}
	roomUpdate, roomSync := measure("room")
	for _, name := range names {
		if _, err := e.users[name].LeaveRoom(e.ctx, resp.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range []string{"!presence group create bench", "!presence group add bench @m*:" + harness.ServerName} {
		if r := e.command("admin", cmd); r.Reaction != "✅" {
			t.Fatalf("%s: %q", cmd, r.Body)
		}
	}
	// Every member is learned at a /sync of theirs once presence moves.
	deadline := time.Now().Add(60 * time.Second)
	for tick := 0; ; tick++ {
		e.setPresence("admin", "online", fmt.Sprintf("tick %d", tick))
		time.Sleep(time.Second)
		if strings.Contains(e.command("admin", "!presence status").Body, fmt.Sprintf("; %d users known", n)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, not all %d users are known: %s", n, e.command("admin", "!presence status").Body)
		}
	}
	groupUpdate, groupSync := measure("group")
	for _, r := range []struct {
		what        string
		group, room time.Duration
	}{{"per presence update", groupUpdate, roomUpdate}, {"per incremental /sync", groupSync, roomSync}} {
		ratio := float64(r.group) / float64(r.room)
		verdict := "PASS"
		if ratio > 1.0 {
			verdict = "MISS"
		}
		fmt.Printf("grouproom: %d users, Synapse CPU %s, one group vs one room: %s vs %s, ratio %.2f  target <= 1.0  %s\n", n, r.what, r.group, r.room, ratio, verdict)
	}
}
