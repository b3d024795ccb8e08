package publish

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const durableTopic = "yolo7d/dev1/test/durable"

func TestPublisherKeepsQoS1AcrossBrokerRestart(t *testing.T) {
	m := newMosquitto(t, true)
	sub := subscribe(t, m.URL(), "sub-restart", durableTopic, true)
	p := startPublisher(t, testConfig(t, m.URL()), Options{})
	waitFor(t, 10*time.Second, "publisher connected", p.Connected)

	// Publish continuously: before, during and after a broker outage.
	stop := make(chan struct{})
	published := make(chan int)
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if err := p.PublishJSON(durableTopic, 1, false, &numbered{N: n}); err != nil {
				t.Errorf("publish %d: %v", n, err)
				return
			}
			n++
		}
	}()
	time.Sleep(700 * time.Millisecond)
	m.Stop()
	t.Log("broker stopped")
	waitFor(t, 5*time.Second, "publisher to notice the outage", func() bool { return !p.Connected() })
	time.Sleep(3 * time.Second)
	m.Start()
	t.Log("broker restarted")
	waitFor(t, 20*time.Second, "publisher reconnected", p.Connected)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	n := <-published

	waitFor(t, 30*time.Second, fmt.Sprintf("all %d messages", n), func() bool {
		miss, _ := missing(numbersOn(t, sub.messages(), durableTopic), n)
		return len(miss) == 0
	})
	got := numbersOn(t, sub.messages(), durableTopic)
	_, dups := missing(got, n)
	t.Logf("published %d, received %d, duplicates %d, sender rewinds %d; stats %+v", n, len(got), dups, p.rewinds.Load(), p.Stats())
	if st := p.Stats(); st.DroppedQoS1 != 0 || st.Reconnects == 0 {
		t.Errorf("stats %+v: want no QoS 1 drops and a reconnect", st)
	}
	checkSeqPerN(t, got)
}

// checkSeqPerN checks that seq increases with n (the publisher stamps them
// in the same order) and that duplicates carry the same seq.
func checkSeqPerN(t *testing.T, got []numbered) {
	t.Helper()
	seqOf := map[int]uint64{}
	for _, g := range got {
		if s, ok := seqOf[g.N]; ok && s != g.Seq {
			t.Fatalf("n=%d seen with seq %d and %d", g.N, s, g.Seq)
		}
		seqOf[g.N] = g.Seq
	}
	for n := 1; ; n++ {
		a, okA := seqOf[n-1]
		b, okB := seqOf[n]
		if !okA || !okB {
			return
		}
		if b <= a {
			t.Fatalf("seq not increasing: n=%d seq %d, n=%d seq %d", n-1, a, n, b)
		}
	}
}

// The helper process publishes numbered QoS 1 messages, from HELPER_FROM
// (inclusive) to HELPER_TO (exclusive), prints "published", and waits to be
// killed (or, with HELPER_CLOSE set, closes cleanly once connected and
// drained).
const helperEnv = "YOLO7D_PUBLISH_HELPER"

func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for the tests that kill the agent")
	}
	from, _ := strconv.Atoi(os.Getenv("HELPER_FROM"))
	to, _ := strconv.Atoi(os.Getenv("HELPER_TO"))
	cfg := testConfig(t, os.Getenv("HELPER_BROKER"))
	cfg.StateDir = os.Getenv("HELPER_STATE")
	p, err := New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	if err := p.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	for i := from; i < to; i++ {
		if err := p.PublishJSON(durableTopic, 1, false, &numbered{N: i}); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
	}
	fmt.Println("published")
	for !p.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("connected")
	for !p.drained() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("drained")
	select {} // until killed
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	lines <-chan string
	done  chan struct{}
}

func startHelper(t *testing.T, broker, state string, from, to int) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "HELPER_BROKER="+broker, "HELPER_STATE="+state,
		"HELPER_FROM="+strconv.Itoa(from), "HELPER_TO="+strconv.Itoa(to))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, lines: lines(out), done: make(chan struct{})}
	go func() { cmd.Wait(); close(h.done) }()
	t.Cleanup(func() { h.kill() })
	return h
}

// await waits for the helper to print want; it fails on "error" lines.
func (h *helper) await(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited before printing %q", want)
			}
			if strings.HasPrefix(l, "error") {
				t.Fatalf("helper: %s", l)
			}
			if l == want {
				return
			}
		case <-deadline:
			t.Fatalf("helper did not print %q within %v", want, timeout)
		}
	}
}

// kill SIGKILLs the helper and waits for it.
func (h *helper) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.done
}

func TestPublisherKeepsQoS1AcrossAgentKillWhileBrokerDown(t *testing.T) {
	m := newMosquitto(t, false)
	state := t.TempDir()
	const first, total = 300, 400

	// With the broker down, the agent publishes and is killed.
	h := startHelper(t, m.URL(), state, 0, first)
	h.await(t, "published", 20*time.Second)
	h.kill()

	// The broker comes up, a subscriber, then the agent again.
	m.Start()
	sub := subscribe(t, m.URL(), "sub-kill", durableTopic, true)
	h = startHelper(t, m.URL(), state, first, total)
	h.await(t, "drained", 30*time.Second)

	waitFor(t, 20*time.Second, "every message", func() bool {
		miss, _ := missing(numbersOn(t, sub.messages(), durableTopic), total)
		return len(miss) == 0
	})
	got := numbersOn(t, sub.messages(), durableTopic)
	_, dups := missing(got, total)
	t.Logf("received %d of %d numbers, %d duplicates", len(got), total, dups)
	checkSeqPerN(t, got)
	var maxBefore, minAfter uint64 = 0, ^uint64(0)
	for _, g := range got {
		if g.N < first {
			maxBefore = max(maxBefore, g.Seq)
		} else {
			minAfter = min(minAfter, g.Seq)
		}
	}
	if minAfter <= maxBefore {
		t.Errorf("seq did not keep increasing across the restart: last before %d, first after %d", maxBefore, minAfter)
	}
}

func TestPublisherKeepsQoS1AcrossAgentKillWithMessagesInFlight(t *testing.T) {
	m := newMosquitto(t, true)
	sub := subscribe(t, m.URL(), "sub-kill-inflight", durableTopic, true)
	state := t.TempDir()
	const first, total = 3000, 3100

	// Killed while connected, with messages in flight and unsent.
	h := startHelper(t, m.URL(), state, 0, first)
	h.await(t, "connected", 20*time.Second)
	h.kill()
	h = startHelper(t, m.URL(), state, first, total)
	h.await(t, "drained", 30*time.Second)

	waitFor(t, 20*time.Second, "every message", func() bool {
		miss, _ := missing(numbersOn(t, sub.messages(), durableTopic), total)
		return len(miss) == 0
	})
	got := numbersOn(t, sub.messages(), durableTopic)
	_, dups := missing(got, total)
	t.Logf("received %d messages for %d numbers, %d duplicates", len(got), total, dups)
	checkSeqPerN(t, got)
}
