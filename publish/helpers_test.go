package publish

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/yolo7d/yolo7d/publish/mqtttest"
)

// testLogger logs through t.Log, so output shows only for failing tests
// (or with -v).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquitto is the shared test broker of package mqtttest.
type mosquitto = mqtttest.Mosquitto

// newMosquitto starts (unless start is false) a real mosquitto for t.
func newMosquitto(t testing.TB, start bool) *mosquitto { return mqtttest.NewMosquitto(t, start) }

// received is one message seen by a collector.
type received struct {
	topic    string
	payload  []byte
	retained bool
}

// collector is a paho subscriber that records what it receives.
type collector struct {
	client mqtt.Client
	mu     sync.Mutex
	msgs   []received
}

// subscribe connects a subscriber to filter at QoS 1. With persistent set,
// it uses a persistent session (clean session off) under clientID, so the
// broker queues messages for it while it is disconnected.
func subscribe(t testing.TB, url, clientID, filter string, persistent bool) *collector {
	t.Helper()
	c := &collector{}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, received{m.Topic(), append([]byte(nil), m.Payload()...), m.Retained()})
		c.mu.Unlock()
	}
	subscribed := make(chan struct{}, 1)
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetCleanSession(!persistent).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOrderMatters(false).SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(cl mqtt.Client) {
			tok := cl.Subscribe(filter, 1, handler)
			tok.Wait()
			select {
			case subscribed <- struct{}{}:
			default:
			}
		})
	c.client = mqtt.NewClient(opts)
	c.client.Connect()
	select {
	case <-subscribed:
	case <-time.After(15 * time.Second):
		t.Fatal("subscriber did not connect")
	}
	t.Cleanup(func() { c.client.Disconnect(100) })
	return c
}

// messages returns a copy of what was received.
func (c *collector) messages() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.msgs...)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// numbered is the test payload: a Header plus the test's own counter.
type numbered struct {
	Header
	N int `json:"n"`
}

// numbers decodes the numbered payloads received on topic, in arrival order.
func numbersOn(t testing.TB, msgs []received, topic string) []numbered {
	t.Helper()
	var out []numbered
	for _, m := range msgs {
		if m.topic != topic {
			continue
		}
		var n numbered
		if err := json.Unmarshal(m.payload, &n); err != nil {
			t.Fatalf("bad payload on %s: %v: %q", topic, err, m.payload)
		}
		out = append(out, n)
	}
	return out
}

// missing returns the numbers in [0, n) not present in got, and how many
// duplicates got holds.
func missing(got []numbered, n int) (miss []int, dups int) {
	seen := make(map[int]int, len(got))
	for _, g := range got {
		seen[g.N]++
		if seen[g.N] > 1 {
			dups++
		}
	}
	for i := 0; i < n; i++ {
		if seen[i] == 0 {
			miss = append(miss, i)
		}
	}
	return miss, dups
}

// testConfig is a configuration for a test broker URL with a fresh state
// directory.
func testConfig(t testing.TB, url string) Config {
	cfg := DefaultConfig()
	cfg.Broker = url
	cfg.StateDir = t.TempDir()
	cfg.ConnectTimeout = 2 * time.Second
	cfg.KeepAlive = 5 * time.Second
	return cfg
}

// startPublisher makes and starts a publisher, closed at cleanup.
func startPublisher(t testing.TB, cfg Config, opts Options) *Publisher {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.DeviceID == "" {
		opts.DeviceID = "dev1"
	}
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	return p
}

// lines reads r line by line into a channel.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
