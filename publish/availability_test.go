package publish

import (
	"context"
	"testing"
	"time"
)

// lastPayload returns the last payload received on topic.
func lastPayload(c *collector, topic string) (string, bool) {
	msgs := c.messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].topic == topic {
			return string(msgs[i].payload), msgs[i].retained
		}
	}
	return "", false
}

func TestAvailabilityIsOnlineAfterConnectAndOfflineWhenTheAgentDies(t *testing.T) {
	m := newMosquitto(t, true)
	avail := NewTopics("yolo7d/dev1").Availability()
	sub := subscribe(t, m.URL(), "sub-avail", avail, false)

	h := startHelper(t, m.URL(), t.TempDir(), 0, 0)
	h.await(t, "connected", 20*time.Second)
	waitFor(t, 10*time.Second, `"online"`, func() bool {
		p, _ := lastPayload(sub, avail)
		return p == "online"
	})
	// A new subscriber gets it retained.
	late := subscribe(t, m.URL(), "sub-avail-late", avail, false)
	waitFor(t, 5*time.Second, `retained "online"`, func() bool {
		p, retained := lastPayload(late, avail)
		return p == "online" && retained
	})

	// SIGKILL: the socket closes without DISCONNECT; the broker sends the will.
	h.kill()
	waitFor(t, 10*time.Second, `"offline" (last will)`, func() bool {
		p, _ := lastPayload(sub, avail)
		return p == "offline"
	})
	later := subscribe(t, m.URL(), "sub-avail-later", avail, false)
	waitFor(t, 5*time.Second, `retained "offline"`, func() bool {
		p, retained := lastPayload(later, avail)
		return p == "offline" && retained
	})
}

func TestAvailabilityIsOfflineAfterCleanClose(t *testing.T) {
	m := newMosquitto(t, true)
	cfg := testConfig(t, m.URL())
	p, err := New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	avail := p.Topics().Availability()
	sub := subscribe(t, m.URL(), "sub-close", avail, false)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, `"online"`, func() bool {
		got, _ := lastPayload(sub, avail)
		return got == "online"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, `"offline"`, func() bool {
		got, _ := lastPayload(sub, avail)
		return got == "offline"
	})
	late := subscribe(t, m.URL(), "sub-close-late", avail, false)
	waitFor(t, 5*time.Second, `retained "offline"`, func() bool {
		got, retained := lastPayload(late, avail)
		return got == "offline" && retained
	})
	if err := p.PublishRaw("x", 0, false, nil); err != ErrClosed {
		t.Errorf("publish after Close: %v, want ErrClosed", err)
	}
}
