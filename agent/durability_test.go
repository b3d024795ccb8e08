package agent

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

// TestAgentKeepsQoS1DetectionsAcrossBrokerOutageAndAgentKill is the
// delivery guarantee end to end, with the real binary and a real mosquitto:
// the broker is stopped for seconds and restarted; then, with the broker
// down again, the agent is SIGKILLed and restarted, and only then the
// broker comes back. Every QoS 1 detections message produced must reach a
// persistent subscriber (at least once: duplicates are allowed and counted).
// Sequence numbers are contiguous within one agent process, and jump once
// at a restart (blocks are reserved ahead), so the received numbers may have
// at most one gap: the restart.
func TestAgentKeepsQoS1DetectionsAcrossBrokerOutageAndAgentKill(t *testing.T) {
	broker := startMosquitto(t)
	bin := buildAgent(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 2)
	cfgPath := testConfig{
		Broker:   broker.URL(),
		StateDir: filepath.Join(dir, "state"),
		Model:    testModel(t),
		Cameras:  fileCamera("cam1", video, 10),
	}.write(t, dir)
	topic := prefixFor(t) + "/cameras/cam1/detections"

	// A persistent QoS 1 subscriber: the broker queues for it while it is away.
	type got struct {
		seq uint64
		ts  time.Time
	}
	var mu sync.Mutex
	var received []got
	opts := mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("durability-sub").
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetMaxReconnectInterval(200 * time.Millisecond).SetOrderMatters(false)
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
			var h struct {
				Seq uint64    `json:"seq"`
				TS  time.Time `json:"ts"`
			}
			if err := json.Unmarshal(m.Payload(), &h); err != nil {
				t.Errorf("bad payload: %v", err)
				return
			}
			mu.Lock()
			received = append(received, got{h.Seq, h.TS})
			mu.Unlock()
		})
	})
	sub := mqtt.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(received) }
	receivedIn := func(from, to time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, g := range received {
			if g.ts.After(from) && g.ts.Before(to) {
				n++
			}
		}
		return n
	}

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--config", cfgPath)
		cmd.Stderr = newTestLog(t)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	agent1 := start()
	waitFor(t, 30*time.Second, "10 detections", func() bool { return count() >= 10 })

	// 1. Broker outage while the agent runs.
	broker.Stop()
	down1 := time.Now()
	time.Sleep(3 * time.Second)
	up1 := time.Now()
	broker.Start()
	// Count only messages produced after the broker's return: the broker
	// also redelivers unacknowledged ones to the subscriber (duplicates),
	// which says nothing about the agent having reconnected.
	waitFor(t, 20*time.Second, "detections after the broker's return", func() bool { return receivedIn(up1, time.Now().Add(time.Hour)) > 5 })

	// 2. Broker down, agent SIGKILLed and restarted, then broker back.
	broker.Stop()
	down2 := time.Now()
	time.Sleep(2 * time.Second)
	_ = agent1.Process.Signal(syscall.SIGKILL)
	_ = agent1.Wait()
	killed := time.Now()
	agent2 := start()
	time.Sleep(4 * time.Second)
	up2 := time.Now()
	broker.Start()
	waitFor(t, 30*time.Second, "detections from the restarted agent", func() bool { return receivedIn(up2, time.Now().Add(time.Hour)) > 10 })
	_ = agent2.Process.Signal(syscall.SIGTERM)
	if err := agent2.Wait(); err != nil {
		t.Errorf("agent exit after SIGTERM: %v", err)
	}
	time.Sleep(time.Second) // let the last acknowledged messages reach the subscriber

	mu.Lock()
	defer mu.Unlock()
	seen := make(map[uint64]int)
	for _, g := range received {
		seen[g.seq]++
	}
	seqs := make([]uint64, 0, len(seen))
	dups := 0
	for s, c := range seen {
		seqs = append(seqs, s)
		dups += c - 1
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var gaps []string
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			gaps = append(gaps, fmt.Sprintf("%d..%d", seqs[i-1], seqs[i]))
		}
	}
	tsOf := func(seq uint64) time.Time {
		for _, g := range received {
			if g.seq == seq {
				return g.ts
			}
		}
		return time.Time{}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] == seqs[i-1]+1 {
			continue
		}
		// The one gap allowed is the restart: the message before it was
		// produced by the killed agent, the one after by its successor.
		before, after := tsOf(seqs[i-1]), tsOf(seqs[i])
		if !before.Before(killed) || !after.After(killed) {
			t.Errorf("gap %d..%d is not at the restart (messages made %v and %v after the kill)",
				seqs[i-1], seqs[i], before.Sub(killed).Round(time.Millisecond), after.Sub(killed).Round(time.Millisecond))
		}
	}
	t.Logf("received %d messages, %d distinct seqs (%d..%d), %d duplicates, gaps %v",
		len(received), len(seqs), seqs[0], seqs[len(seqs)-1], dups, gaps)
	if len(gaps) > 1 {
		t.Errorf("lost messages: %d gaps in the sequence numbers (one is the restart): %v", len(gaps), gaps)
	}
	// Messages produced while the broker was down arrived.
	margin := 300 * time.Millisecond
	for _, w := range []struct {
		what     string
		from, to time.Time
	}{
		{"first broker outage", down1.Add(margin), up1.Add(-margin)},
		{"broker down before the kill", down2.Add(margin), killed.Add(-margin)},
		{"restarted agent with the broker down", killed, up2.Add(-margin)},
	} {
		mu.Unlock()
		k := receivedIn(w.from, w.to)
		mu.Lock()
		if k == 0 {
			t.Errorf("nothing produced during the %s (%v) arrived", w.what, w.to.Sub(w.from).Round(time.Millisecond))
		} else {
			t.Logf("%s: %d messages produced in %v arrived", w.what, k, w.to.Sub(w.from).Round(time.Millisecond))
		}
	}
}
