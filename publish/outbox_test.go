package publish

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const obTopic = "yolo7d/dev1/test/outbox"

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fillOutbox writes n records (payload "msg-<i>") to a new outbox in dir and
// closes it. It returns the offset of each record in the single segment.
func fillOutbox(t testing.TB, dir string, n int) (segPath string, offs []int64) {
	t.Helper()
	o, err := openOutbox(dir, 1<<20, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := o.append(obTopic, 1, i%2 == 0, []byte(fmt.Sprintf("msg-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range o.entries {
		offs = append(offs, e.off)
	}
	segPath = o.active().path
	if err := o.close(); err != nil {
		t.Fatal(err)
	}
	return segPath, offs
}

// drainOutbox returns the indexes next yields, in order, and acknowledges
// them when ack is set.
func drainOutbox(t testing.TB, o *outbox, ack bool) []uint64 {
	t.Helper()
	var got []uint64
	for {
		r, ok, err := o.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return got
		}
		if want := fmt.Sprintf("msg-%d", r.index); string(r.payload) != want && len(r.payload) < 64 {
			t.Fatalf("record %d has payload %q, want %q", r.index, r.payload, want)
		}
		got = append(got, r.index)
		if ack {
			o.ack(r.index)
		}
	}
}

func seq(from, to uint64, skip ...uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		if !slices.Contains(skip, i) {
			s = append(s, i)
		}
	}
	return s
}

func TestOutboxRecoveryKeepsIntactRecordsAndSkipsDamage(t *testing.T) {
	const n = 10
	cases := []struct {
		name   string
		damage func(t *testing.T, dir, seg string, offs []int64)
		want   []uint64
	}{
		{"intact", func(*testing.T, string, string, []int64) {}, seq(0, n)},
		{"truncated inside a record", func(t *testing.T, _, seg string, offs []int64) {
			must(t, os.Truncate(seg, offs[7]+20))
		}, seq(0, 7)},
		{"truncated inside a header", func(t *testing.T, _, seg string, offs []int64) {
			must(t, os.Truncate(seg, offs[7]+3))
		}, seq(0, 7)},
		{"garbled payload of a middle record", func(t *testing.T, _, seg string, offs []int64) {
			patch(t, seg, offs[5]-2, []byte{0xff})
		}, seq(0, n, 4)},
		{"garbled length of a middle record", func(t *testing.T, _, seg string, offs []int64) {
			patch(t, seg, offs[4]+4, []byte{0xff, 0xff, 0xff, 0x7f})
		}, seq(0, n, 4)},
		{"garbled magic", func(t *testing.T, _, seg string, offs []int64) {
			patch(t, seg, offs[0], []byte{0})
		}, seq(1, n)},
		{"zeroes after the last record (power loss)", func(t *testing.T, _, seg string, _ []int64) {
			f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
			must(t, err)
			_, err = f.Write(make([]byte, 4096))
			must(t, err)
			must(t, f.Close())
		}, seq(0, n)},
		{"whole segment garbage", func(t *testing.T, _, seg string, _ []int64) {
			b := make([]byte, 3000)
			for i := range b {
				b[i] = byte(i * 7)
			}
			must(t, os.WriteFile(seg, b, 0o600))
		}, nil},
		{"empty segment", func(t *testing.T, _, seg string, _ []int64) {
			must(t, os.Truncate(seg, 0))
		}, nil},
		{"damaged cursor resends everything", func(t *testing.T, dir, _ string, _ []int64) {
			must(t, os.WriteFile(filepath.Join(dir, cursorFile), []byte("junk"), 0o600))
		}, seq(0, n)},
		{"cursor skips acknowledged records", func(t *testing.T, dir, _ string, _ []int64) {
			var b [12]byte
			binary.LittleEndian.PutUint64(b[:], 6)
			binary.LittleEndian.PutUint32(b[8:], crc32c(b[:8]))
			must(t, os.WriteFile(filepath.Join(dir, cursorFile), b[:], 0o600))
		}, seq(6, n)},
		{"stray files are ignored", func(t *testing.T, dir, _ string, _ []int64) {
			must(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600))
			must(t, os.WriteFile(filepath.Join(dir, "x.seg"), []byte("x"), 0o600))
			must(t, os.WriteFile(filepath.Join(dir, "cursor.tmp"), []byte("x"), 0o600))
		}, seq(0, n)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			seg, offs := fillOutbox(t, dir, n)
			tc.damage(t, dir, seg, offs)

			o, err := openOutbox(dir, 1<<20, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := drainOutbox(t, o, false); !slices.Equal(got, tc.want) {
				t.Fatalf("recovered %v, want %v", got, tc.want)
			}
			// New records follow, with higher indexes, and survive a reopen.
			if _, err := o.append(obTopic, 1, false, []byte("new")); err != nil {
				t.Fatal(err)
			}
			must(t, o.close())
			o, err = openOutbox(dir, 1<<20, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer o.close()
			var last outRecord
			for {
				r, ok, err := o.next()
				must(t, err)
				if !ok {
					break
				}
				last = r
			}
			if string(last.payload) != "new" || (len(tc.want) > 0 && last.index <= tc.want[len(tc.want)-1]) {
				t.Fatalf("last record after reopen: index %d payload %q, want the new one", last.index, last.payload)
			}
		})
	}
}

func crc32c(b []byte) uint32 {
	return crc32Checksum(b)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(b, off)
	must(t, err)
	must(t, f.Close())
}

func TestOutboxAcknowledgedRecordsAreNotResentAndSegmentsAreDeleted(t *testing.T) {
	dir := t.TempDir()
	o, err := openOutbox(dir, 64<<10, discardLogger()) // segments of 8 KiB
	must(t, err)
	payload := make([]byte, 500)
	for i := 0; i < 100; i++ {
		_, err := o.append(obTopic, 1, false, payload)
		must(t, err)
	}
	var got []uint64
	for i := 0; i < 90; i++ {
		r, ok, err := o.next()
		if err != nil || !ok {
			t.Fatalf("next: %v %v", ok, err)
		}
		got = append(got, r.index)
	}
	// Acknowledge out of order, except 42.
	for i := len(got) - 1; i >= 0; i-- {
		if got[i] != 42 {
			o.ack(got[i])
		}
	}
	must(t, o.sync())
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) > 12 { // 100 records of ~560 bytes in 8 KiB segments: 7 in all; those below 42 go
		t.Errorf("%d segments left after acknowledging", len(segs))
	}
	must(t, o.close())

	o, err = openOutbox(dir, 64<<10, discardLogger())
	must(t, err)
	defer o.close()
	var left []uint64
	for {
		r, ok, err := o.next()
		must(t, err)
		if !ok {
			break
		}
		left = append(left, r.index)
	}
	// The cursor is at 42: 42 and everything from 90 come back (the
	// acknowledged ones between may too: at least once).
	if !slices.Contains(left, 42) || !slices.Equal(left[len(left)-10:], seq(90, 100)) || slices.ContainsFunc(left, func(i uint64) bool { return i < 42 }) {
		t.Fatalf("after reopen: %v", left)
	}
}

func TestOutboxDropsOldestWhenFull(t *testing.T) {
	o, err := openOutbox(t.TempDir(), 5*recordSize(obTopic, []byte("msg-0")), discardLogger())
	must(t, err)
	defer o.close()
	var dropped int
	for i := 0; i < 8; i++ {
		d, err := o.append(obTopic, 1, false, []byte(fmt.Sprintf("msg-%d", i)))
		must(t, err)
		dropped += d
	}
	if dropped != 3 {
		t.Errorf("dropped %d, want 3", dropped)
	}
	if got := drainOutbox(t, o, true); !slices.Equal(got, seq(3, 8)) {
		t.Errorf("kept %v, want 3..7", got)
	}
	if _, err := o.append(obTopic, 1, false, make([]byte, 1000)); err == nil {
		t.Error("a record larger than the bound was accepted")
	}
}

// TestOutboxDamageIsResentUpToTheDamage runs the whole publisher: QoS 1
// messages enqueued with no broker, the outbox damaged while the agent is
// down, then the messages before the damage (and after it) arrive.
func TestOutboxDamageIsResentUpToTheDamage(t *testing.T) {
	b, err := StartEmbeddedBroker("127.0.0.1:0", testLogger(t))
	must(t, err)
	t.Cleanup(func() { b.Close() })
	cfg := testConfig(t, b.URL())
	p, err := New(cfg, Options{DeviceID: "dev1", Logger: testLogger(t)})
	must(t, err)
	for i := 0; i < 10; i++ {
		must(t, p.PublishJSON(durableTopic, 1, false, &numbered{N: i}))
	}
	must(t, p.Close(context.Background()))
	dir := filepath.Join(cfg.StateDir, "mqtt", "outbox")
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var seg string
	for _, s := range segs {
		if fi, _ := os.Stat(s); fi.Size() > 0 {
			seg = s
		}
	}
	data, err := os.ReadFile(seg)
	must(t, err)
	var offs []int
	scanRecords(data, func(off int, _ outRecord, _ int) { offs = append(offs, off) })
	must(t, os.Truncate(seg, int64(offs[7]+15))) // torn write of record 7

	sub := subscribe(t, b.URL(), "sub-damage", durableTopic, false)
	p = startPublisher(t, cfg, Options{})
	must(t, p.PublishJSON(durableTopic, 1, false, &numbered{N: 10}))
	waitFor(t, 10*time.Second, "records 0..6 and 10", func() bool {
		got := numbersOn(t, sub.messages(), durableTopic)
		miss, _ := missing(got, 11)
		return slices.Equal(miss, []int{7, 8, 9})
	})
}

func FuzzOutboxRecovery(f *testing.F) {
	dir := f.TempDir()
	seg, offs := fillOutbox(f, dir, 4)
	valid, err := os.ReadFile(seg)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, []byte(nil))
	f.Add(valid[:offs[2]+7], []byte(nil))
	f.Add(append(append([]byte{}, valid[:offs[1]]...), valid[offs[1]+3:]...), []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{}, []byte("junk"))
	f.Add(make([]byte, 100), []byte(nil))
	f.Fuzz(func(t *testing.T, segment, cursor []byte) {
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, "00000000000000000000.seg"), segment, 0o600))
		if cursor != nil {
			must(t, os.WriteFile(filepath.Join(dir, cursorFile), cursor, 0o600))
		}
		o, err := openOutbox(dir, 1<<20, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		var n int
		for {
			r, ok, err := o.next()
			must(t, err)
			if !ok {
				break
			}
			if n > 0 && r.index <= last {
				t.Fatalf("index %d after %d", r.index, last)
			}
			last, n = r.index, n+1
			o.ack(r.index)
		}
		if _, err := o.append(obTopic, 1, false, []byte("after")); err != nil {
			t.Fatal(err)
		}
		must(t, o.close())
		o, err = openOutbox(dir, 1<<20, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		defer o.close()
		r, ok, err := o.next()
		if err != nil || !ok || string(r.payload) != "after" {
			t.Fatalf("after reopen: %v %v %q", ok, err, r.payload)
		}
	})
}
