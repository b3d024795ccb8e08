package publish

import (
	"testing"
	"time"
)

func TestEmbeddedBrokerCarriesPublisherMessages(t *testing.T) {
	b, err := StartEmbeddedBroker("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if b.Addr() == "127.0.0.1:0" {
		t.Fatalf("Addr() = %s, want the bound port", b.Addr())
	}
	sub := subscribe(t, b.URL(), "sub-embedded", "yolo7d/dev1/#", false)
	p := startPublisher(t, testConfig(t, b.URL()), Options{})

	const n = 50
	for i := 0; i < n; i++ {
		qos := byte(i % 2)
		if err := p.PublishJSON("yolo7d/dev1/test", qos, false, &numbered{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all messages", func() bool {
		miss, _ := missing(numbersOn(t, sub.messages(), "yolo7d/dev1/test"), n)
		return len(miss) == 0
	})
	got := numbersOn(t, sub.messages(), "yolo7d/dev1/test")
	for _, g := range got {
		if g.V != SchemaVersion || g.Seq == 0 || g.TS.IsZero() {
			t.Fatalf("header not stamped: %+v", g)
		}
	}
	waitFor(t, 5*time.Second, "online", func() bool {
		for _, m := range sub.messages() {
			if m.topic == p.Topics().Availability() && string(m.payload) == "online" {
				return true
			}
		}
		return false
	})
}

func TestPublisherStartsEmbeddedBrokerWhenConfigured(t *testing.T) {
	cfg := testConfig(t, "embedded")
	cfg.EmbeddedListen = "127.0.0.1:0"
	p := startPublisher(t, cfg, Options{})
	waitFor(t, 10*time.Second, "connection to the embedded broker", p.Connected)
	sub := subscribe(t, p.broker.URL(), "sub", p.Topics().Availability(), false)
	waitFor(t, 5*time.Second, "retained online", func() bool {
		m := sub.messages()
		return len(m) > 0 && string(m[len(m)-1].payload) == "online" && m[len(m)-1].retained
	})
}
