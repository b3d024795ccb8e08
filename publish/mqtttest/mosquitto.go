// Package mqtttest runs a real mosquitto broker for tests: on a free
// loopback port, with persistence in a temporary directory, stoppable and
// restartable on the same port. Tests of publish and of the agent use it.
package mqtttest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a mosquitto process under a test's control.
type Mosquitto struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// NewMosquitto prepares a broker (skipping the test when mosquitto is not
// installed) and starts it unless start is false. It is stopped at cleanup,
// and its log is printed when the test failed.
func NewMosquitto(t testing.TB, start bool) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		t.Skip("mosquitto is not installed (make deps installs it)")
	}
	m := &Mosquitto{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	var user string
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to the "mosquitto" user, which cannot
		// write the test's temporary directory: its persistence (the
		// sessions' queued messages) would silently not be saved.
		user = "user root\n"
	}
	conf := fmt.Sprintf("%slistener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nautosave_interval 1\nmax_queued_messages 0\nlog_dest file %s\n",
		user, m.port, m.dir, filepath.Join(m.dir, "mosquitto.log"))
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(m.dir, "mosquitto.log")); err == nil {
				s := string(b)
				if len(s) > 4000 {
					s = s[len(s)-4000:]
				}
				t.Logf("mosquitto log:\n%s", s)
			}
		}
	})
	if start {
		m.Start()
	}
	return m
}

// URL is the broker's address for paho, tcp://127.0.0.1:PORT.
func (m *Mosquitto) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

// Port is the broker's TCP port.
func (m *Mosquitto) Port() int { return m.port }

// Start starts the broker and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	cmd := exec.Command(m.bin, "-c", m.conf)
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(m.done)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			m.t.Fatalf("mosquitto exited at start (port %d taken?)", m.port)
		case <-time.After(20 * time.Millisecond):
		}
	}
	m.t.Fatal("mosquitto did not start listening")
}

// Stop stops the broker with SIGTERM (it saves its persistence database)
// and waits for it to exit.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
