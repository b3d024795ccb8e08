package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/yolo7d/yolo7d/publish/mqtttest"
)

// startMosquitto starts a real mosquitto on a free loopback port.
func startMosquitto(t *testing.T) *mqtttest.Mosquitto { return mqtttest.NewMosquitto(t, true) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after %v", addr, within)
}

// message is one MQTT message seen by a subscriber.
type message struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time
}

// subscriber records every message on a topic filter.
type subscriber struct {
	mu     sync.Mutex
	msgs   []message
	client mqtt.Client
}

func subscribe(t *testing.T, broker, filter string) *subscriber {
	t.Helper()
	s := &subscriber{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("test-sub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetOrderMatters(false)
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			s.mu.Lock()
			s.msgs = append(s.msgs, message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained(), At: time.Now()})
			s.mu.Unlock()
		})
	})
	s.client = mqtt.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s
}

// on returns the messages whose topic ends with suffix.
func (s *subscriber) on(suffix string) []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []message
	for _, m := range s.msgs {
		if strings.HasSuffix(m.Topic, suffix) {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls until cond holds or fails the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", within, what)
}

// lastJSON decodes the newest message on suffix into v; false when none.
func (s *subscriber) lastJSON(t *testing.T, suffix string, v any) bool {
	t.Helper()
	ms := s.on(suffix)
	if len(ms) == 0 {
		return false
	}
	if err := json.Unmarshal(ms[len(ms)-1].Payload, v); err != nil {
		t.Fatalf("payload on %s is not JSON: %v: %q", ms[len(ms)-1].Topic, err, ms[len(ms)-1].Payload)
	}
	return true
}

// runAgent starts an agent on cfgPath in this process; stop cancels it and
// returns Run's error, failing the test if it does not end within 20 s.
func runAgent(t *testing.T, cfgPath string) (a *Agent, stop func() error) {
	t.Helper()
	a, err := New(Options{ConfigPath: cfgPath, LogOutput: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("agent did not stop within 20s")
			return nil
		}
	}
}

// fileCamera is a [[camera]] table looping over a video file.
func fileCamera(name, video string, maxFPS int) string {
	return fmt.Sprintf("[[camera]]\nname = %q\nuri = \"file://%s\"\nloop = true\nmax_fps = %d\n", name, video, maxFPS)
}
