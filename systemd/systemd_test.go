package systemd

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite yolo7d.service from the template")

// maxExposure is the highest `systemd-analyze security` exposure (0..10,
// lower is better) the default unit may reach. systemd 252 rates it 1.6: what
// is left is what the agent needs (Internet and netlink sockets, camera and
// GPU devices and the video group, no PrivateNetwork/IP allow list since the
// broker can be anywhere, no MemoryDenyWriteExecute for the CUDA JIT,
// @resources for setpriority/affinity) plus PrivateUsers, ProcSubset and
// RootDirectory, which break group-based device access and CUDA's
// /proc/driver/nvidia.
const maxExposure = 1.6

func render(t *testing.T, p UnitParams) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, p); err != nil {
		t.Fatalf("Render: %v", err)
	}
	return b.Bytes()
}

func TestCommittedUnitMatchesTemplate(t *testing.T) {
	want := render(t, DefaultParams())
	if *update {
		if err := os.WriteFile("yolo7d.service", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("yolo7d.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("systemd/yolo7d.service differs from the template rendered with DefaultParams; run `go test ./systemd -run TestCommittedUnit -update`")
	}
}

func TestRenderContents(t *testing.T) {
	tests := []struct {
		name    string
		p       UnitParams
		want    []string
		notWant []string
	}{
		{
			name: "defaults",
			p:    DefaultParams(),
			want: []string{
				"Type=notify\n", "NotifyAccess=main\n", "WatchdogSec=30s\n", "Restart=on-failure\n",
				"RestartSec=5s\n", "TimeoutStartSec=5min\n", "StateDirectory=yolo7d\n",
				"ExecStart=/usr/local/bin/yolo7d run --config /etc/yolo7d/config.toml\n",
				"ExecReload=/bin/kill -HUP $MAINPID\n", "DynamicUser=yes\n",
				"CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "DevicePolicy=closed\n",
				"DeviceAllow=char-video4linux rw\n", "DeviceAllow=char-nvidia-frontend rw\n",
				"DeviceAllow=/dev/nvmap rw\n", "SupplementaryGroups=video\n",
				"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
				"SystemCallFilter=@system-service\n", "WantedBy=multi-user.target\n",
			},
			notWant: []string{"\nUser=", "\nMemoryDenyWriteExecute=", "{{", "<no value>"},
		},
		{
			name: "user and odd paths",
			p: UnitParams{
				ExecPath: "/opt/my apps/yolo7d", ConfigPath: "/etc/yolo7d/100%.toml", User: "yolo7d",
				WatchdogSec: 1500 * time.Millisecond * 2, RestartSec: 250 * time.Millisecond,
			},
			want: []string{
				`ExecStart="/opt/my apps/yolo7d" run --config /etc/yolo7d/100%%.toml` + "\n",
				"User=yolo7d\n", "WatchdogSec=3s\n", "RestartSec=250ms\n",
			},
			notWant: []string{"DynamicUser="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(render(t, tt.p))
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("unit lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unit contains %q", w)
				}
			}
		})
	}
}

func TestRenderInvalid(t *testing.T) {
	ok := DefaultParams()
	tests := []struct {
		name string
		edit func(*UnitParams)
		want string
	}{
		{"relative exec", func(p *UnitParams) { p.ExecPath = "bin/yolo7d" }, "ExecPath"},
		{"missing config", func(p *UnitParams) { p.ConfigPath = "" }, "ConfigPath is required"},
		{"newline", func(p *UnitParams) { p.ConfigPath = "/etc/a\nExecStartPre=/bin/sh" }, "control characters"},
		{"unclean", func(p *UnitParams) { p.ExecPath = "/usr/../bin/yolo7d" }, "clean path"},
		{"bad user", func(p *UnitParams) { p.User = "a b" }, "User"},
		{"root", func(p *UnitParams) { p.User = "root" }, "not allowed"},
		{"short watchdog", func(p *UnitParams) { p.WatchdogSec = time.Second }, "WatchdogSec"},
		{"sub-ms", func(p *UnitParams) { p.RestartSec = time.Second + time.Microsecond }, "milliseconds"},
		{"description", func(p *UnitParams) { p.Description = "a\nb" }, "Description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			var b bytes.Buffer
			err := Render(&b, p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render error = %v, want one containing %q", err, tt.want)
			}
			if b.Len() != 0 {
				t.Errorf("Render wrote %d bytes for invalid params", b.Len())
			}
		})
	}
}

// writeUnit renders p into a temporary directory as yolo7d.service, with the
// running test binary as ExecPath (systemd-analyze verify insists that it
// exists and is executable).
func writeUnit(t *testing.T, p UnitParams) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p.ExecPath = filepath.Clean(exe)
	path := filepath.Join(t.TempDir(), "yolo7d.service")
	if err := os.WriteFile(path, render(t, p), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	return bin
}

// TestVerify fails on any output of systemd-analyze verify, since unknown
// keys and bad values are only warnings there (exit status 0).
func TestVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	for _, user := range []string{"", "yolo7d"} {
		t.Run("user="+user, func(t *testing.T) {
			p := DefaultParams()
			p.User = user
			unit := writeUnit(t, p)
			cmd := exec.Command(bin, "verify", unit)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err != nil || stderr.Len() > 0 || stdout.Len() > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\nstdout:\n%s\nstderr:\n%s", unit, err, stdout.String(), stderr.String())
			}
		})
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9])`)

func TestSecurityExposure(t *testing.T) {
	bin := systemdAnalyze(t)
	unit := writeUnit(t, DefaultParams())
	out, err := exec.Command(bin, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=yes: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in the output of systemd-analyze security:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: exposure %.1f (limit %.1f)", score, maxExposure)
	if score > maxExposure {
		var worse []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "✗") {
				worse = append(worse, strings.Join(strings.Fields(line), " "))
			}
		}
		t.Errorf("exposure %.1f is above %.1f; exposed settings:\n%s", score, maxExposure, strings.Join(worse, "\n"))
	}
}
