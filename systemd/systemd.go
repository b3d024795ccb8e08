// Package systemd renders the systemd unit that runs yolo7d as a service.
//
// The unit (yolo7d.service.tmpl, embedded) is a Type=notify service with a
// watchdog, restart on failure, a state directory and a hardened sandbox:
// no capabilities, a read-only file system except the state directory, no
// namespaces, a system call allow list, and a closed device policy that admits
// only V4L2 cameras and NVIDIA GPUs (discrete and Jetson). The copy committed
// as systemd/yolo7d.service is the template rendered with DefaultParams; a
// test keeps the two identical.
package systemd

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"
)

//go:embed yolo7d.service.tmpl
var unitTemplate string

// tmpl is parsed once; it is never modified after init.
var tmpl = template.Must(template.New("yolo7d.service").
	Funcs(template.FuncMap{"arg": execArg}).
	Option("missingkey=error").
	Parse(unitTemplate))

// Default values of UnitParams.
const (
	DefaultName         = "yolo7d"
	DefaultExecPath     = "/usr/local/bin/yolo7d"
	DefaultConfigPath   = "/etc/yolo7d/config.toml"
	DefaultDescription  = "yolo7d edge detection agent (cameras, YOLOv7-tiny, MQTT)"
	DefaultWatchdogSec  = 30 * time.Second
	DefaultRestartSec   = 5 * time.Second
	DefaultStartTimeout = 5 * time.Minute
)

// UnitParams are the parameters of the unit file. Zero values take the
// defaults of DefaultParams, except ExecPath and ConfigPath, which must be
// set (absolute paths).
type UnitParams struct {
	// Name is the unit name without ".service" (default "yolo7d"); it is
	// used in comments only: StateDirectory stays "yolo7d".
	Name string
	// ExecPath is the absolute path of the yolo7d binary.
	ExecPath string
	// ConfigPath is the absolute path of the configuration file.
	ConfigPath string
	// User runs the service under a static account. Empty means
	// DynamicUser=yes (a transient user allocated by systemd).
	User string
	// Description is the unit's Description= (one line).
	Description string
	// WatchdogSec is the systemd watchdog interval (default 30s; the agent
	// pings at half of it). Whole seconds or milliseconds.
	WatchdogSec time.Duration
	// RestartSec is the delay before a restart after a failure (default 5s).
	RestartSec time.Duration
	// StartTimeout is TimeoutStartSec= (default 5min): a TensorRT engine
	// build on a Jetson takes minutes.
	StartTimeout time.Duration
}

// DefaultParams returns the parameters of the committed unit file.
func DefaultParams() UnitParams {
	return UnitParams{
		Name:         DefaultName,
		ExecPath:     DefaultExecPath,
		ConfigPath:   DefaultConfigPath,
		Description:  DefaultDescription,
		WatchdogSec:  DefaultWatchdogSec,
		RestartSec:   DefaultRestartSec,
		StartTimeout: DefaultStartTimeout,
	}
}

// userRE is what systemd accepts as a portable user name.
var userRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_-]{0,30}$`)

// nameRE restricts the unit name to plain characters.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.@-]{1,64}$`)

// withDefaults fills the zero fields of p.
func (p UnitParams) withDefaults() UnitParams {
	d := DefaultParams()
	if p.Name == "" {
		p.Name = d.Name
	}
	if p.Description == "" {
		p.Description = d.Description
	}
	if p.WatchdogSec == 0 {
		p.WatchdogSec = d.WatchdogSec
	}
	if p.RestartSec == 0 {
		p.RestartSec = d.RestartSec
	}
	if p.StartTimeout == 0 {
		p.StartTimeout = d.StartTimeout
	}
	return p
}

// Validate reports every problem of p (after defaults) at once.
func (p UnitParams) Validate() error {
	p = p.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, f := range []struct{ name, path string }{{"ExecPath", p.ExecPath}, {"ConfigPath", p.ConfigPath}} {
		switch {
		case f.path == "":
			bad("systemd unit: %s is required", f.name)
		case !filepath.IsAbs(f.path):
			bad("systemd unit: %s %q is not an absolute path", f.name, f.path)
		case strings.ContainsFunc(f.path, isControl):
			bad("systemd unit: %s %q contains control characters", f.name, f.path)
		case filepath.Clean(f.path) != f.path:
			bad("systemd unit: %s %q is not a clean path (want %q)", f.name, f.path, filepath.Clean(f.path))
		}
	}
	if p.User != "" && !userRE.MatchString(p.User) {
		bad("systemd unit: User %q is not a valid user name", p.User)
	}
	if p.User == "root" || p.User == "nobody" {
		bad("systemd unit: User %q is not allowed (leave it empty for a dynamic user)", p.User)
	}
	if !nameRE.MatchString(p.Name) {
		bad("systemd unit: Name %q is not a valid unit name", p.Name)
	}
	if strings.ContainsFunc(p.Description, isControl) || strings.Contains(p.Description, "%") {
		bad("systemd unit: Description %q must be one line without control characters or %%", p.Description)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{{"WatchdogSec", p.WatchdogSec, 2 * time.Second}, {"RestartSec", p.RestartSec, 100 * time.Millisecond}, {"StartTimeout", p.StartTimeout, time.Second}} {
		if d.v < d.min {
			bad("systemd unit: %s %v is below %v", d.name, d.v, d.min)
		} else if d.v%time.Millisecond != 0 {
			bad("systemd unit: %s %v is not a whole number of milliseconds", d.name, d.v)
		}
	}
	return errors.Join(errs...)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// unitData is what the template sees.
type unitData struct {
	Name, ExecPath, ConfigPath, User, Description string
	WatchdogSec, RestartSec, StartTimeout         string
}

// Render writes the unit file for p to w. It validates p first and writes
// nothing when p is invalid.
func Render(w io.Writer, p UnitParams) error {
	if err := p.Validate(); err != nil {
		return err
	}
	p = p.withDefaults()
	var b strings.Builder
	err := tmpl.Execute(&b, unitData{
		Name:         p.Name,
		ExecPath:     p.ExecPath,
		ConfigPath:   p.ConfigPath,
		User:         p.User,
		Description:  p.Description,
		WatchdogSec:  timespan(p.WatchdogSec),
		RestartSec:   timespan(p.RestartSec),
		StartTimeout: timespan(p.StartTimeout),
	})
	if err != nil {
		return fmt.Errorf("systemd unit: render: %w", err)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("systemd unit: write: %w", err)
	}
	return nil
}

// timespan formats d as a systemd time span ("30s", "5min", "1500ms").
func timespan(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return fmt.Sprintf("%dmin", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	default:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
}

// execArg quotes one ExecStart= argument the way systemd parses it: '%' is a
// specifier and '$' a variable unless doubled, backslashes and quotes are
// escaped, and arguments with blanks are double-quoted.
func execArg(s string) string {
	r := strings.NewReplacer(`%`, `%%`, `$`, `$$`, `\`, `\\`, `"`, `\"`)
	q := r.Replace(s)
	if strings.ContainsAny(s, " \t'\"") || q == "" {
		return `"` + q + `"`
	}
	return q
}
