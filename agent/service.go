package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kardianos/service"

	"github.com/yolo7d/yolo7d/systemd"
)

// ServiceName is the name of the system service and of its unit file.
const ServiceName = "yolo7d"

// program adapts an Agent to kardianos/service: Start must not block, Stop
// waits for the graceful shutdown.
type program struct {
	opts   Options
	cancel context.CancelFunc
	exited chan struct{} // closed when the agent's Run returns
	err    error         // Run's result, readable once exited is closed
}

func newProgram(opts Options) *program {
	return &program{opts: opts, exited: make(chan struct{})}
}

func (p *program) Start(service.Service) error {
	a, err := New(p.opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.log.Info("SIGHUP: reloading configuration")
				rctx, rcancel := context.WithTimeout(ctx, time.Minute)
				if err := a.Reload(rctx); err != nil {
					a.log.Error("reload failed", "err", err)
				}
				rcancel()
			}
		}
	}()
	go func() {
		p.err = a.Run(ctx)
		cancel()
		close(p.exited)
	}()
	return nil
}

func (p *program) Stop(service.Service) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(20 * time.Second):
		return errors.New("shutdown took longer than 20s")
	}
}

// Run runs the agent in the foreground under kardianos/service, which
// handles SIGINT and SIGTERM (graceful shutdown); SIGHUP reloads the
// configuration. It returns when the agent stops, with its error.
func Run(opts Options) error {
	prg := newProgram(opts)
	s, err := service.New(prg, serviceConfig(opts.ConfigPath, service.KeyValue{
		// Wait for a signal, or for the agent to end on its own (an error).
		"RunWait": func() {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
			defer signal.Stop(sig)
			select {
			case <-sig:
			case <-prg.exited:
			}
		},
	}))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	return s.Run()
}

func serviceConfig(configPath string, opt service.KeyValue) *service.Config {
	return &service.Config{
		Name:        ServiceName,
		DisplayName: "yolo7d detection agent",
		Description: "YOLOv7-tiny camera detection agent publishing to MQTT",
		Arguments:   []string{"run", "--config", configPath},
		Option:      opt,
	}
}

// InstallOptions are the parameters of Install.
type InstallOptions struct {
	ExecPath   string // the yolo7d binary (default: this executable)
	ConfigPath string // absolute path of the configuration file
	UnitDir    string // where the unit goes (default /etc/systemd/system)
	User       string // run as this static account instead of a DynamicUser
	// NoSystemctl writes the unit only (no daemon-reload / enable): for
	// packaging and tests.
	NoSystemctl bool
}

// ErrNoSystemd is returned by the service commands on machines whose init
// system is not systemd.
var ErrNoSystemd = errors.New("this machine does not run systemd")

// systemdRunning reports whether systemd is PID 1 (as sd_booted does).
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func noSystemdError(action string) error {
	comm, _ := os.ReadFile("/proc/1/comm")
	return fmt.Errorf("%s: %w (PID 1 is %q, init system detected: %s); yolo7d installs only as a systemd service: run it in the foreground with `yolo7d run --config FILE`, or write the unit for another machine with `yolo7d install --unit-dir DIR --no-systemctl`",
		action, ErrNoSystemd, strings.TrimSpace(string(comm)), service.ChosenSystem().String())
}

// Install renders systemd/yolo7d.service for this machine into the unit
// directory, then reloads systemd and enables the service. kardianos's own
// systemd unit lacks Type=notify and WatchdogSec, so ours is written instead.
func Install(o InstallOptions) error {
	if o.UnitDir == "" {
		o.UnitDir = "/etc/systemd/system"
	}
	if !o.NoSystemctl && !systemdRunning() {
		return noSystemdError("install")
	}
	if o.ExecPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("install: find executable: %w", err)
		}
		o.ExecPath = exe
	}
	var err error
	if o.ExecPath, err = filepath.Abs(o.ExecPath); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if o.ConfigPath, err = filepath.Abs(o.ConfigPath); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if _, err := Load(o.ConfigPath); err != nil {
		return fmt.Errorf("install: the configuration must be valid: %w", err)
	}
	var unit bytes.Buffer
	params := systemd.DefaultParams()
	params.ExecPath, params.ConfigPath, params.User = o.ExecPath, o.ConfigPath, o.User
	if err := systemd.Render(&unit, params); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	path := filepath.Join(o.UnitDir, ServiceName+".service")
	if err := writeFileAtomic(path, unit.Bytes(), 0o644); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if o.NoSystemctl {
		return nil
	}
	if err := systemctl("daemon-reload"); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := systemctl("enable", ServiceName+".service"); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// Uninstall stops and disables the service and removes its unit.
func Uninstall(unitDir string) error {
	if !systemdRunning() {
		return noSystemdError("uninstall")
	}
	if unitDir == "" {
		unitDir = "/etc/systemd/system"
	}
	_ = systemctl("disable", "--now", ServiceName+".service")
	path := filepath.Join(unitDir, ServiceName+".service")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstall: %w", err)
	}
	return systemctl("daemon-reload")
}

// Control runs start, stop or restart through kardianos/service.
func Control(action string) error {
	if !systemdRunning() {
		return noSystemdError(action)
	}
	s, err := service.New(newProgram(Options{}), serviceConfig("", nil))
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	if err := service.Control(s, action); err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// Status reports the service state ("running", "stopped", "not installed").
func Status() (string, error) {
	if !systemdRunning() {
		return "", noSystemdError("status")
	}
	s, err := service.New(newProgram(Options{}), serviceConfig("", nil))
	if err != nil {
		return "", fmt.Errorf("status: %w", err)
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return "not installed", nil
	case err != nil:
		return "", fmt.Errorf("status: %w", err)
	case st == service.StatusRunning:
		return "running", nil
	case st == service.StatusStopped:
		return "stopped", nil
	default:
		return "unknown", nil
	}
}

func systemctl(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("systemctl", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, fsyncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
