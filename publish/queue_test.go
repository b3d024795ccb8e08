package publish

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFullQueuesDropOldestFirstAndCountIt(t *testing.T) {
	m := newMosquitto(t, false) // down while publishing
	const q0Topic, q1Topic = "yolo7d/dev1/test/q0", "yolo7d/dev1/test/q1"
	cfg := testConfig(t, m.URL())
	cfg.QueueSize = 5
	cfg.OutboxMaxBytes = 3 * recordSize(q1Topic, []byte("0000"))
	p, err := New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { p.Close(context.Background()) })
	for i := 0; i < 20; i++ {
		must(t, p.PublishRaw(q0Topic, 0, false, fmt.Appendf(nil, "%04d", i)))
	}
	for i := 0; i < 10; i++ {
		must(t, p.PublishRaw(q1Topic, 1, false, fmt.Appendf(nil, "%04d", i)))
	}
	st := p.Stats()
	if st.DroppedQoS0 != 15 || st.QueueDepth != 5 || st.DroppedQoS1 != 7 || st.OutboxRecords != 3 {
		t.Fatalf("stats %+v: want 15 QoS 0 dropped, 5 queued, 7 QoS 1 dropped, 3 in the outbox", st)
	}

	m.Start()
	sub := subscribe(t, m.URL(), "sub-bound", "yolo7d/dev1/test/+", false)
	must(t, p.Start(context.Background()))
	want := map[string][]string{
		q0Topic: {"0015", "0016", "0017", "0018", "0019"},
		q1Topic: {"0007", "0008", "0009"},
	}
	waitFor(t, 10*time.Second, "the newest messages", func() bool {
		got := map[string][]string{}
		for _, r := range sub.messages() {
			got[r.topic] = append(got[r.topic], string(r.payload))
		}
		for topic, w := range want {
			g := slices.Clone(got[topic])
			slices.Sort(g)
			if !slices.Equal(slices.Compact(g), w) {
				return false
			}
		}
		return true
	})
}

func TestSequenceNumbersIncreaseAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.json")
	s, err := openSeqStore(path, discardLogger())
	must(t, err)
	var last uint64
	for i := 0; i < 3000; i++ {
		n := s.next("a")
		if n <= last {
			t.Fatalf("seq %d after %d", n, last)
		}
		last = n
	}
	if s.next("b") != 1 {
		t.Error("a new topic does not start at 1")
	}
	// Reopen without any close, as after a SIGKILL.
	s, err = openSeqStore(path, discardLogger())
	must(t, err)
	if n := s.next("a"); n <= last {
		t.Fatalf("after reopen seq %d, last before %d", n, last)
	}
}

func TestCloseWithoutBrokerReturnsPromptlyAndKeepsQoS1(t *testing.T) {
	cfg := testConfig(t, fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)))
	p, err := New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	must(t, err)
	must(t, p.Start(context.Background()))
	must(t, p.PublishJSON("yolo7d/dev1/test", 1, false, &numbered{N: 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	must(t, p.Close(ctx))
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v with no broker", el)
	}
	p, err = New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	must(t, err)
	defer p.Close(context.Background())
	if st := p.Stats(); st.OutboxRecords != 1 {
		t.Errorf("after reopen: %+v, want the QoS 1 message still in the outbox", st)
	}
}
