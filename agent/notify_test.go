package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket listens on a unixgram socket, points NOTIFY_SOCKET at it and
// returns a channel of the datagrams received.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return ""
	}
}

func TestNotifierMessages(t *testing.T) {
	ch := notifySocket(t)
	n := NewNotifier(nil)
	if !n.Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"ready", n.Ready, "READY=1"},
		{"stopping", n.Stopping, "STOPPING=1"},
		{"reloading", n.Reloading, "RELOADING=1\nMONOTONIC_USEC="},
		{"status", func() { n.Status("running:\n2 cameras") }, "STATUS=running: 2 cameras"},
		{"extend", func() { n.ExtendTimeout(90 * time.Second) }, "EXTEND_TIMEOUT_USEC=90000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.call()
			if got := recv(t, ch); !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want prefix %q", got, tt.want)
			}
		})
	}
}

func TestNotifierNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier(nil)
	if n.Enabled() {
		t.Fatal("Enabled() = true without NOTIFY_SOCKET")
	}
	n.Ready()
	n.Status("x")
	done := make(chan struct{})
	go func() { n.RunWatchdog(context.Background(), nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return at once without NOTIFY_SOCKET")
	}
}

func TestRunWatchdog(t *testing.T) {
	tests := []struct {
		name    string
		pid     string
		usec    string
		healthy bool
		pings   bool
	}{
		{"healthy pings", "self", "100000", true, true},
		{"unhealthy withholds", "self", "100000", false, false},
		{"other pid", "1", "100000", true, false},
		{"no watchdog", "self", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := notifySocket(t)
			if tt.pid == "self" {
				tt.pid = strconv.Itoa(os.Getpid())
			}
			t.Setenv("WATCHDOG_PID", tt.pid)
			t.Setenv("WATCHDOG_USEC", tt.usec)
			var healthy atomic.Bool
			healthy.Store(tt.healthy)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { NewNotifier(nil).RunWatchdog(ctx, healthy.Load); close(done) }()
			// The period is 50ms: 400ms is room for several pings.
			time.Sleep(400 * time.Millisecond)
			cancel()
			<-done
			pings := 0
			var other []string
		drain:
			for {
				select {
				case m := <-ch:
					if m == "WATCHDOG=1" {
						pings++
					} else {
						other = append(other, m)
					}
				default:
					break drain
				}
			}
			if tt.pings && pings < 3 {
				t.Errorf("got %d WATCHDOG=1 in 400ms with a 100ms watchdog, want >= 3", pings)
			}
			if !tt.pings && pings != 0 {
				t.Errorf("got %d WATCHDOG=1, want none", pings)
			}
			if !tt.healthy && (len(other) != 1 || !strings.HasPrefix(other[0], "STATUS=unhealthy")) {
				t.Errorf("unhealthy agent sent %q, want one STATUS=unhealthy...", other)
			}
		})
	}
}

func TestRunWatchdogRecovers(t *testing.T) {
	ch := notifySocket(t)
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("WATCHDOG_USEC", "100000")
	var healthy atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewNotifier(nil).RunWatchdog(ctx, healthy.Load)
	if got := recv(t, ch); !strings.HasPrefix(got, "STATUS=unhealthy") {
		t.Fatalf("first message %q, want STATUS=unhealthy...", got)
	}
	healthy.Store(true)
	if got := recv(t, ch); got != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q, want WATCHDOG=1", got)
	}
}
