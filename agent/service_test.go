package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

func TestInstallRefusesClearlyWithoutSystemd(t *testing.T) {
	if systemdRunning() {
		t.Skip("this machine runs systemd")
	}
	cfg := writeMinimalConfig(t)
	err := Install(InstallOptions{ConfigPath: cfg, UnitDir: t.TempDir()})
	if !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("Install without systemd: got %v, want ErrNoSystemd", err)
	}
	for _, want := range []string{"does not run systemd", "yolo7d run"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	for _, action := range []string{"start", "stop"} {
		if err := Control(action); !errors.Is(err, ErrNoSystemd) {
			t.Errorf("Control(%s): got %v, want ErrNoSystemd", action, err)
		}
	}
}

func TestInstallWritesTheRenderedUnit(t *testing.T) {
	cfg := writeMinimalConfig(t)
	unitDir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := Install(InstallOptions{ExecPath: exe, ConfigPath: cfg, UnitDir: unitDir, NoSystemctl: true}); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, "yolo7d.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=yolo7d",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", exe + " run --config " + cfg} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("installed unit lacks %q:\n%s", want, unit)
		}
	}
	// An invalid configuration is refused before anything is written.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[agent]\nbogus = 1\n"), 0o644)
	if err := Install(InstallOptions{ExecPath: exe, ConfigPath: bad, UnitDir: t.TempDir(), NoSystemctl: true}); err == nil {
		t.Error("Install accepted an invalid configuration")
	}
}

func writeMinimalConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("[agent]\nstate_dir = %q\n[detector]\nmodel = \"model.onnx\"\n[[camera]]\nname = \"c\"\nuri = \"file://v.mp4\"\n", filepath.Join(dir, "state"))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAgentBinaryNotifiesSystemdAndReloadsOnSIGHUP runs the binary as
// systemd would (NOTIFY_SOCKET, WATCHDOG_USEC): READY=1, watchdog pings,
// a SIGHUP that adds a camera, a SIGHUP with a broken file that changes
// nothing, and STOPPING=1 on SIGTERM.
func TestAgentBinaryNotifiesSystemdAndReloadsOnSIGHUP(t *testing.T) {
	broker := startMosquitto(t)
	bin := buildAgent(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 2)

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	notes := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line != "" {
					notes <- line
				}
			}
		}
	}()
	expect := func(prefix string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case n, ok := <-notes:
				if !ok {
					t.Fatalf("notify socket closed before %s", prefix)
				}
				if strings.HasPrefix(n, prefix) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s on NOTIFY_SOCKET within %v", prefix, within)
			}
		}
	}

	camera := func(name string) string {
		return fileCamera(name, video, 5)
	}
	tc := testConfig{Broker: broker.URL(), StateDir: filepath.Join(dir, "state"), Model: testModel(t), Cameras: camera("one")}
	cfgPath := tc.write(t, dir)
	sub := subscribe(t, broker.URL(), prefixFor(t)+"/#")

	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=1000000")
	cmd.Stderr = newTestLog(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	expect("READY=1", 30*time.Second)
	expect("WATCHDOG=1", 3*time.Second)
	waitFor(t, 20*time.Second, "detections of camera one", func() bool { return len(sub.on("/cameras/one/detections")) > 0 })

	tc.Cameras = camera("one") + camera("two")
	tc.write(t, dir)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expect("RELOADING=1", 5*time.Second)
	waitFor(t, 20*time.Second, "detections of camera two after SIGHUP", func() bool { return len(sub.on("/cameras/two/detections")) > 0 })

	// A broken file is rejected; both cameras keep running.
	if err := os.WriteFile(cfgPath, []byte("[agent]\nbogus = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(time.Second)
	n1, n2 := len(sub.on("/cameras/one/detections")), len(sub.on("/cameras/two/detections"))
	waitFor(t, 10*time.Second, "both cameras still detecting after a rejected reload", func() bool {
		return len(sub.on("/cameras/one/detections")) > n1 && len(sub.on("/cameras/two/detections")) > n2
	})

	_ = cmd.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1", 10*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
