package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// Defaults of the configuration file (see config.toml for every key).
const (
	DefaultStateDir        = "/var/lib/yolo7d"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
	DefaultBackend         = "auto"
	DefaultPrecision       = "fp32"
	DefaultInputSize       = 640
	DefaultConfThreshold   = 0.25
	DefaultIoUThreshold    = 0.45
	DefaultMaxDetections   = 300
	DefaultBroker          = "embedded"
	DefaultEmbeddedListen  = "127.0.0.1:1883"
	DefaultKeepAlive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultQoS             = 1
	DefaultQueueSize       = 1000
	DefaultOutboxMaxBytes  = 64 << 20
	DefaultStatsInterval   = 30 * time.Second
	DefaultDiscoveryPrefix = publish.DefaultDiscoveryPrefix
	DefaultSnapshotEvery   = 10 * time.Second
	DefaultSnapshotJPEG    = 85

	DefaultFinetuneEpochs        = 30
	DefaultFinetuneBatch         = 8
	DefaultFinetuneMargin        = 0.005
	DefaultFinetuneMaxReplayDrop = 0.02
	DefaultFinetuneBN            = "frozen"
	DefaultFinetuneMode          = "share"
	DefaultFinetuneDevice        = "cpu"
)

// DefaultFinetuneThreads is the default of finetune.threads: every core but
// one (left to detection), at least 1.
func DefaultFinetuneThreads() int { return max(1, runtime.NumCPU()-1) }

// MaxConfigSize is the largest configuration file Parse accepts.
const MaxConfigSize = 1 << 20

// ConfigError is one problem of a configuration file. Load and Parse return
// all of them at once, joined with errors.Join, in file order.
type ConfigError struct {
	File string // the file name as given to Load or Parse
	Line int    // 1-based line of the key (or of its table); 0 if none applies
	Key  string // full key, e.g. "camera[1].stall_timeout" or "mqtt.qos"; empty for the whole file
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and checks the configuration file at path: see Parse.
func Load(path string) (*Config, error) {
	cfg, _, err := LoadWithWarnings(path)
	return cfg, err
}

// LoadWithWarnings is Load that also returns the warnings: problems that do
// not stop the agent, such as a secret file readable by other users.
func LoadWithWarnings(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return ParseWithWarnings(data, path)
}

// Parse decodes and checks a configuration file; name is its path, used in
// messages and as the base of relative paths in it. The check is strict: an
// unknown key, a value of the wrong type or an invalid value is an error
// naming the file, the key and its line, and every problem is reported at
// once. Defaults are applied to every optional key, and relative paths
// (state_dir, detector.model, file:// camera sources, mqtt.password_file,
// ca_file, cert_file, key_file) are made absolute relative to the file's
// directory.
func Parse(data []byte, name string) (*Config, error) {
	cfg, _, err := ParseWithWarnings(data, name)
	return cfg, err
}

// ParseWithWarnings is Parse that also returns the warnings.
func ParseWithWarnings(data []byte, name string) (*Config, []string, error) {
	if len(data) > MaxConfigSize {
		return nil, nil, &ConfigError{File: name, Msg: fmt.Sprintf("file is %d bytes, more than the %d a configuration may have", len(data), MaxConfigSize)}
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		e := &ConfigError{File: name, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line, e.Msg = pe.Position.Line, "syntax error: "+pe.Message
		}
		return nil, nil, e
	}
	base, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		base = filepath.Dir(name)
	}
	d := &loader{file: name, base: base, lines: keyLines(data), defined: make(map[string]bool), failed: make(map[string]bool)}
	cfg := new(Config)
	d.decodeStruct("", raw, reflect.ValueOf(cfg).Elem())
	d.finish(cfg)
	if err := d.err(); err != nil {
		return nil, d.warningLines(), err
	}
	return cfg, d.warningLines(), nil
}

// loader carries the state of one Parse.
type loader struct {
	file    string
	base    string         // absolute directory of the file
	lines   map[string]int // key -> line
	defined map[string]bool
	failed  map[string]bool // keys with an error
	errs    []*ConfigError
	warns   []*ConfigError
}

func (d *loader) problem(key, format string, args ...any) *ConfigError {
	return &ConfigError{File: d.file, Line: d.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// errorf records an error about key, unless key already has one (a value
// that failed to decode is not validated again).
func (d *loader) errorf(key, format string, args ...any) {
	if key != "" && d.failed[key] {
		return
	}
	d.failed[key] = true
	d.errs = append(d.errs, d.problem(key, format, args...))
}

func (d *loader) warnf(key, format string, args ...any) {
	d.warns = append(d.warns, d.problem(key, format, args...))
}

// line is the line of key, or of the nearest enclosing key or table that
// has one (keys inside inline tables, missing keys).
func (d *loader) line(key string) int {
	for k := key; k != ""; k = parentKey(k) {
		if l, ok := d.lines[k]; ok {
			return l
		}
	}
	return 0
}

// byLine sorts problems in file order; those without a line go last.
func byLine(ps []*ConfigError) {
	slices.SortStableFunc(ps, func(a, b *ConfigError) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = int(^uint(0) >> 1)
		}
		if lb == 0 {
			lb = int(^uint(0) >> 1)
		}
		return la - lb
	})
}

func (d *loader) err() error {
	byLine(d.errs)
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (d *loader) warningLines() []string {
	byLine(d.warns)
	var out []string
	for _, w := range d.warns {
		out = append(out, w.Error())
	}
	return out
}

// ---- decoding: raw TOML values into the Config structs, strictly ----

var durationType = reflect.TypeFor[time.Duration]()

// tomlName is the TOML key of a struct field ("" for none).
func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

func (d *loader) decodeStruct(prefix string, m map[string]any, rv reflect.Value) {
	t := rv.Type()
	fields := make(map[string]int)
	var names []string
	for i := range t.NumField() {
		if n := tomlName(t.Field(i)); n != "" {
			fields[n] = i
			names = append(names, n)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := joinKey(prefix, k)
		i, ok := fields[k]
		if !ok {
			d.unknownKey(key, k, names)
			continue
		}
		d.defined[key] = true
		d.decodeValue(key, m[k], rv.Field(i))
	}
}

func (d *loader) unknownKey(key, k string, known []string) {
	if k == "password" && slices.Contains(known, "password_file") {
		d.errorf(key, "unknown key: inline passwords are not supported: use password_file, the path of a file holding the password (readable only by the agent)")
		return
	}
	msg := "unknown key"
	best, bestDist := "", 3
	for _, n := range known {
		if dist := editDistance(k, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	}
	d.errorf(key, "%s", msg)
}

func (d *loader) decodeValue(key string, v any, fv reflect.Value) {
	wrong := func(want string) { d.errorf(key, "want %s, got %s", want, tomlType(v)) }
	if fv.Type() == durationType {
		s, ok := v.(string)
		if !ok {
			wrong(`a duration string like "10s"`)
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(key, "invalid duration %q (want a number with a unit: ms, s, m or h, e.g. \"500ms\", \"10s\", \"1m30s\")", s)
			return
		}
		fv.SetInt(int64(dur))
		return
	}
	switch fv.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			wrong("a string")
			return
		}
		fv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			wrong("true or false")
			return
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			wrong("an integer")
			return
		}
		if fv.OverflowInt(n) {
			d.errorf(key, "%d is out of range", n)
			return
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(int64)
		if !ok {
			wrong("an integer")
			return
		}
		if n < 0 || fv.OverflowUint(uint64(n)) {
			d.errorf(key, "%d is out of range", n)
			return
		}
		fv.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		switch x := v.(type) {
		case float64:
			fv.SetFloat(x)
		case int64:
			fv.SetFloat(float64(x))
		default:
			wrong("a number")
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			wrong("a table")
			return
		}
		d.decodeStruct(key, m, fv)
	case reflect.Slice:
		d.decodeSlice(key, v, fv)
	default:
		d.errorf(key, "internal error: unsupported field type %s", fv.Type())
	}
}

func (d *loader) decodeSlice(key string, v any, fv reflect.Value) {
	et := fv.Type().Elem()
	if et.Kind() == reflect.Struct {
		var tables []map[string]any
		switch x := v.(type) {
		case []map[string]any:
			tables = x
		case []any: // inline: key = [{...}, {...}]
			for _, e := range x {
				m, ok := e.(map[string]any)
				if !ok {
					d.errorf(key, "want an array of tables ([[%s]]), got an array holding %s", key, tomlType(e))
					return
				}
				tables = append(tables, m)
			}
		default:
			d.errorf(key, "want an array of tables ([[%s]]), got %s", key, tomlType(v))
			return
		}
		s := reflect.MakeSlice(fv.Type(), len(tables), len(tables))
		for i, m := range tables {
			d.decodeStruct(indexKey(key, i), m, s.Index(i))
		}
		fv.Set(s)
		return
	}
	arr, ok := v.([]any)
	if !ok {
		d.errorf(key, "want an array, got %s", tomlType(v))
		return
	}
	s := reflect.MakeSlice(fv.Type(), len(arr), len(arr))
	for i, e := range arr {
		d.decodeValue(indexKey(key, i), e, s.Index(i))
	}
	fv.Set(s)
}

// tomlType names the TOML type of a decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// ---- defaults and validation ----

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)
	deviceIDRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	// userinfoRE finds "scheme://user:password@" in URIs and pipelines.
	userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^@\s/]*@`)
)

func (d *loader) finish(c *Config) {
	d.finishAgent(&c.Agent)
	d.finishDetector(&c.Detector)
	c.Detector.TRTCacheDir = filepath.Join(c.Agent.StateDir, "tensorrt")
	d.finishMQTT(c)
	d.finishSnapshots(&c.Snapshots)
	d.finishFinetune(&c.Finetune)
	d.finishCameras(c)
}

// path makes p absolute relative to the configuration file's directory.
func (d *loader) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(d.base, p)
}

func (d *loader) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		d.errorf(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

// positive checks a duration that was set explicitly (zero means default).
func (d *loader) positive(key string, v time.Duration) {
	if d.defined[key] && v <= 0 {
		d.errorf(key, "must be greater than 0, got %q", v.String())
	}
}

func (d *loader) finishAgent(a *Settings) {
	if !d.defined["agent.device_id"] {
		host, _ := os.Hostname()
		a.DeviceID = SanitizeDeviceID(host)
	} else if !deviceIDRE.MatchString(a.DeviceID) {
		d.errorf("agent.device_id", "%q is not a valid device id (1 to 64 of a-z, 0-9, '_' and '-'; it is part of MQTT topics)", a.DeviceID)
	}
	if !d.defined["agent.state_dir"] {
		a.StateDir = DefaultStateDir
	} else if a.StateDir == "" {
		d.errorf("agent.state_dir", "must not be empty")
	}
	a.StateDir = d.path(a.StateDir)
	if !d.defined["agent.log_level"] {
		a.LogLevel = DefaultLogLevel
	}
	d.oneOf("agent.log_level", a.LogLevel, "debug", "info", "warn", "error")
	if !d.defined["agent.log_format"] {
		a.LogFormat = DefaultLogFormat
	}
	d.oneOf("agent.log_format", a.LogFormat, "text", "json")
}

// SanitizeDeviceID turns a host name into a device id: its first label in
// lower case with every character outside [a-z0-9_-] replaced by '-'
// ("yolo7d" if nothing is left).
func SanitizeDeviceID(host string) string {
	host, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(host)), ".")
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, host)
	id = strings.Trim(id, "-")
	if len(id) > 64 {
		id = strings.TrimRight(id[:64], "-")
	}
	if id == "" {
		return "yolo7d"
	}
	return id
}

func (d *loader) finishDetector(o *infer.Options) {
	if o.Model == "" {
		d.errorf("detector.model", "is required (path of the model file, e.g. \"models/yolov7-tiny.onnx\")")
	}
	o.Model = d.path(o.Model)
	if !d.defined["detector.backend"] {
		o.Backend = DefaultBackend
	}
	d.oneOf("detector.backend", o.Backend, "auto", "cpu", "cudnn", "tensorrt", "opencv")
	if !d.defined["detector.input_size"] {
		o.InputSize = DefaultInputSize
	} else if o.InputSize < 32 || o.InputSize > 1280 || o.InputSize%32 != 0 {
		d.errorf("detector.input_size", "%d is not a multiple of 32 in 32..1280", o.InputSize)
	}
	for _, th := range []struct {
		key string
		v   *float32
		def float32
	}{{"detector.conf_threshold", &o.ConfThreshold, DefaultConfThreshold}, {"detector.iou_threshold", &o.IoUThreshold, DefaultIoUThreshold}} {
		if !d.defined[th.key] {
			*th.v = th.def
		} else if !(*th.v > 0 && *th.v < 1) {
			d.errorf(th.key, "%g is not in (0, 1)", *th.v)
		}
	}
	if !d.defined["detector.max_detections"] {
		o.MaxDetections = DefaultMaxDetections
	} else if o.MaxDetections < 1 || o.MaxDetections > 100000 {
		d.errorf("detector.max_detections", "%d is not in 1..100000", o.MaxDetections)
	}
	if o.Threads < 0 {
		d.errorf("detector.threads", "%d is negative (0 means all cores)", o.Threads)
	}
	if !d.defined["detector.precision"] {
		o.Precision = DefaultPrecision
	}
	d.oneOf("detector.precision", o.Precision, "fp32", "fp16")
	if o.GPULibDir != "" {
		o.GPULibDir = d.path(o.GPULibDir)
	}
	if o.GPUDevice < 0 || o.GPUDevice > 63 {
		d.errorf("detector.gpu_device", "%d is not a CUDA device ordinal in 0..63", o.GPUDevice)
	}
	d.names("detector.class_names", o.ClassNames)
	d.names("detector.classes", o.Classes)
	if len(o.ClassNames) > 0 {
		for i, c := range o.Classes {
			if !slices.Contains(o.ClassNames, c) {
				d.errorf(indexKey("detector.classes", i), "%q is not in detector.class_names", c)
			}
		}
	}
}

// names checks a list of class names: none empty, no duplicates.
func (d *loader) names(key string, list []string) {
	seen := make(map[string]bool)
	for i, n := range list {
		k := indexKey(key, i)
		switch {
		case strings.TrimSpace(n) == "":
			d.errorf(k, "empty class name")
		case seen[n]:
			d.errorf(k, "duplicate class name %q", n)
		}
		seen[n] = true
	}
}

// tlsSchemes are the broker URL schemes that use TLS.
var tlsSchemes = []string{"ssl", "tls", "mqtts", "wss"}

func (d *loader) finishMQTT(c *Config) {
	m := &c.MQTT
	id := c.Agent.DeviceID
	if !d.defined["mqtt.broker"] {
		m.Broker = DefaultBroker
	}
	scheme := d.checkBroker(m.Broker)
	if !d.defined["mqtt.embedded_listen"] {
		m.EmbeddedListen = DefaultEmbeddedListen
	} else if err := checkHostPort(m.EmbeddedListen); err != nil {
		d.errorf("mqtt.embedded_listen", "%v", err)
	}
	if !d.defined["mqtt.prefix"] {
		m.Prefix = "yolo7d/" + id
	} else if err := checkPrefix(m.Prefix); err != nil {
		d.errorf("mqtt.prefix", "%v", err)
	}
	if !d.defined["mqtt.discovery_prefix"] {
		m.DiscoveryPrefix = DefaultDiscoveryPrefix
	} else if err := checkPrefix(m.DiscoveryPrefix); err != nil {
		d.errorf("mqtt.discovery_prefix", "%v", err)
	}
	if !d.defined["mqtt.client_id"] {
		m.ClientID = "yolo7d-" + id
	} else if m.ClientID == "" || len(m.ClientID) > 256 || strings.ContainsFunc(m.ClientID, isControl) {
		d.errorf("mqtt.client_id", "%q is not a usable client id (1 to 256 printable characters)", m.ClientID)
	}
	if strings.ContainsFunc(m.Username, isControl) {
		d.errorf("mqtt.username", "contains control characters")
	}
	for _, f := range []struct {
		key    string
		p      *string
		secret bool
	}{
		{"mqtt.password_file", &m.PasswordFile, true},
		{"mqtt.ca_file", &m.CAFile, false},
		{"mqtt.cert_file", &m.CertFile, false},
		{"mqtt.key_file", &m.KeyFile, true},
	} {
		*f.p = d.path(*f.p)
		if *f.p != "" {
			d.checkFile(f.key, *f.p, f.secret)
		}
	}
	if (m.CertFile == "") != (m.KeyFile == "") {
		k := "mqtt.key_file"
		if m.CertFile != "" {
			k = "mqtt.cert_file"
		}
		d.errorf(k, "cert_file and key_file go together (client certificate authentication)")
	}
	if scheme != "" && !slices.Contains(tlsSchemes, scheme) {
		for _, k := range []string{"mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file", "mqtt.insecure_skip_verify"} {
			if d.defined[k] {
				d.warnf(k, "ignored: broker %q does not use TLS (use ssl://, tls://, mqtts:// or wss://)", scheme+"://")
			}
		}
	}
	if m.InsecureTLS {
		d.warnf("mqtt.insecure_skip_verify", "the broker's certificate is not verified")
	}
	if m.PasswordFile != "" && m.Username == "" {
		d.warnf("mqtt.password_file", "set without mqtt.username")
	}
	if !d.defined["mqtt.keepalive"] {
		m.KeepAlive = DefaultKeepAlive
	} else if m.KeepAlive < time.Second || m.KeepAlive > 65535*time.Second {
		d.errorf("mqtt.keepalive", "%q is not in 1s..18h12m15s", m.KeepAlive.String())
	}
	if !d.defined["mqtt.connect_timeout"] {
		m.ConnectTimeout = DefaultConnectTimeout
	}
	d.positive("mqtt.connect_timeout", m.ConnectTimeout)
	if !d.defined["mqtt.qos"] {
		m.QoS = DefaultQoS
	} else if m.QoS > 1 {
		d.errorf("mqtt.qos", "%d is not 0 or 1 (QoS 2 is not supported)", m.QoS)
	}
	if !d.defined["mqtt.queue_size"] {
		m.QueueSize = DefaultQueueSize
	} else if m.QueueSize < 1 {
		d.errorf("mqtt.queue_size", "%d must be at least 1", m.QueueSize)
	}
	if !d.defined["mqtt.outbox_max_bytes"] {
		m.OutboxMaxBytes = DefaultOutboxMaxBytes
	} else if m.OutboxMaxBytes < 1<<16 {
		d.errorf("mqtt.outbox_max_bytes", "%d must be at least 65536", m.OutboxMaxBytes)
	}
	if !d.defined["mqtt.stats_interval"] {
		m.StatsInterval = DefaultStatsInterval
	}
	d.positive("mqtt.stats_interval", m.StatsInterval)
	m.StateDir = c.Agent.StateDir // publish keeps its files in StateDir/mqtt
}

// checkBroker validates mqtt.broker and returns its scheme ("" for embedded
// or when invalid).
func (d *loader) checkBroker(b string) string {
	if b == "embedded" {
		return ""
	}
	const key = "mqtt.broker"
	u, err := url.Parse(b)
	if err != nil {
		d.errorf(key, "%q is not \"embedded\" or a URL: %v", redact(b), redactErr(err, b))
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	if !slices.Contains([]string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}, scheme) {
		d.errorf(key, "%q: want \"embedded\" or a URL with scheme tcp, ssl, tls, mqtt, mqtts, ws or wss", redact(b))
		return ""
	}
	if u.Hostname() == "" {
		d.errorf(key, "%q has no host", redact(b))
		return ""
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			d.errorf(key, "%q: bad port %q", redact(b), p)
		}
	}
	if _, ok := u.User.Password(); ok {
		d.errorf(key, "passwords in the broker URL are not supported; set mqtt.username and mqtt.password_file")
	}
	return scheme
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", s, port)
	}
	return nil
}

func checkPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("must not be empty")
	case strings.ContainsAny(p, "+#"):
		return fmt.Errorf("%q contains an MQTT wildcard (+ or #)", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must not start or end with '/'", p)
	case strings.Contains(p, "//"):
		return fmt.Errorf("%q has an empty topic level", p)
	case strings.HasPrefix(p, "$"):
		return fmt.Errorf("%q must not start with '$' (reserved for the broker)", p)
	case strings.ContainsFunc(p, isControl):
		return fmt.Errorf("%q contains control characters", p)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// checkFile checks that a file named by the configuration exists and can be
// read, and warns when a secret is accessible by group or others. It reads
// nothing from it.
func (d *loader) checkFile(key, path string, secret bool) {
	f, err := os.Open(path)
	if err != nil {
		d.errorf(key, "%v", err)
		return
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		d.errorf(key, "%v", err)
		return
	}
	if fi.IsDir() {
		d.errorf(key, "%s is a directory", path)
		return
	}
	if secret && fi.Mode().Perm()&0o077 != 0 {
		d.warnf(key, "%s is accessible by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
}

func (d *loader) finishSnapshots(s *SnapshotSettings) {
	if !d.defined["snapshots.min_interval"] {
		s.MinInterval = DefaultSnapshotEvery
	}
	d.positive("snapshots.min_interval", s.MinInterval)
	if !d.defined["snapshots.quality"] {
		s.Quality = DefaultSnapshotJPEG
	} else if s.Quality < 1 || s.Quality > 100 {
		d.errorf("snapshots.quality", "%d is not in 1..100", s.Quality)
	}
}

func (d *loader) finishFinetune(f *FinetuneSettings) {
	const p = "finetune."
	if !d.defined[p+"epochs"] {
		f.Epochs = DefaultFinetuneEpochs
	} else if f.Epochs < 1 || f.Epochs > publish.MaxEpochs {
		d.errorf(p+"epochs", "%d is not in 1..%d", f.Epochs, publish.MaxEpochs)
	}
	if f.Img != 0 && (f.Img < publish.MinImg || f.Img > publish.MaxImg || f.Img%32 != 0) {
		d.errorf(p+"img", "%d is not 0 (the model's input size) or a multiple of 32 in %d..%d", f.Img, publish.MinImg, publish.MaxImg)
	}
	if !d.defined[p+"batch"] {
		f.Batch = DefaultFinetuneBatch
	} else if f.Batch < 1 || f.Batch > publish.MaxBatch {
		d.errorf(p+"batch", "%d is not in 1..%d", f.Batch, publish.MaxBatch)
	}
	if f.Freeze < 0 || f.Freeze > publish.MaxFreeze {
		d.errorf(p+"freeze", "%d is not in 0..%d (layers of yolov7-tiny)", f.Freeze, publish.MaxFreeze)
	}
	if !d.defined[p+"aux"] {
		f.Aux = true
	}
	if !d.defined[p+"margin"] {
		f.Margin = DefaultFinetuneMargin
	} else if !(f.Margin >= -1 && f.Margin <= 1) {
		d.errorf(p+"margin", "%g is not in -1..1 (mAP@0.5:0.95 points, e.g. 0.005)", f.Margin)
	}
	f.Replay = d.path(f.Replay)
	if f.Replay != "" {
		if ext := strings.ToLower(filepath.Ext(f.Replay)); ext != ".yaml" && ext != ".yml" {
			d.errorf(p+"replay", "%s is not a .yaml dataset file", f.Replay)
		} else {
			d.checkFile(p+"replay", f.Replay, false)
		}
	}
	if !d.defined[p+"max_replay_drop"] {
		f.MaxReplayDrop = DefaultFinetuneMaxReplayDrop
	} else if !(f.MaxReplayDrop >= 0 && f.MaxReplayDrop <= 1) {
		d.errorf(p+"max_replay_drop", "%g is not in 0..1", f.MaxReplayDrop)
	}
	if !(f.ReplayMix >= 0 && f.ReplayMix < 0.9) {
		d.errorf(p+"replay_mix", "%g is not a fraction in [0, 0.9)", f.ReplayMix)
	} else if f.ReplayMix > 0 && f.Replay == "" {
		d.errorf(p+"replay_mix", "%g needs replay (a data.yaml of the current model's domain)", f.ReplayMix)
	}
	if !d.defined[p+"bn"] {
		f.BN = DefaultFinetuneBN
	}
	d.oneOf(p+"bn", f.BN, "frozen", "batch")
	if !d.defined[p+"threads"] {
		f.Threads = DefaultFinetuneThreads()
	} else if f.Threads < 1 || f.Threads > 1024 {
		d.errorf(p+"threads", "%d is not in 1..1024", f.Threads)
	}
	if !d.defined[p+"mode"] {
		f.Mode = DefaultFinetuneMode
	}
	d.oneOf(p+"mode", f.Mode, "share", "pause")
	if !d.defined[p+"device"] {
		f.Device = DefaultFinetuneDevice
	}
	d.oneOf(p+"device", f.Device, "cpu", "cudnn", "auto")
}

func (d *loader) finishCameras(c *Config) {
	if len(c.Cameras) == 0 {
		d.errorf("", "no camera: add a [[camera]] table with a name and a uri")
		return
	}
	names := make(map[string]string) // name -> key of its first camera
	enabled := 0
	for i := range c.Cameras {
		cam := &c.Cameras[i]
		p := indexKey("camera", i)
		k := func(field string) string { return p + "." + field }
		switch first, dup := names[cam.Name]; {
		case !d.defined[k("name")]:
			d.errorf(p, "name is required")
		case !nameRE.MatchString(cam.Name):
			d.errorf(k("name"), "%q is not a valid camera name (1 to 32 of a-z, 0-9, '_' and '-'; it is part of MQTT topics)", cam.Name)
		case dup:
			d.errorf(k("name"), "duplicate camera name %q (also %s, line %d)", cam.Name, first, d.line(first))
		default:
			names[cam.Name] = k("name")
		}
		if !d.defined[k("enabled")] {
			cam.Enabled = true
		}
		if cam.Enabled {
			enabled++
		}
		if !d.defined[k("uri")] {
			d.errorf(p, "uri is required (v4l2://0, file://video.mp4, rtsp://..., http://..., gst://..., csi://0)")
		} else if u, err := capture.ParseURI(cam.URI); err != nil {
			d.errorf(k("uri"), "%s", redactErr(err, cam.URI))
		} else {
			if u.Kind == capture.KindFile && !filepath.IsAbs(u.Path) {
				cam.URI = "file://" + (&url.URL{Path: d.path(u.Path)}).EscapedPath()
			}
			if cam.Loop && u.Kind != capture.KindFile {
				d.errorf(k("loop"), "loop applies to file:// sources only, not %s://", u.Kind)
			}
		}
		for _, wh := range []struct {
			f string
			v int
		}{{"width", cam.Width}, {"height", cam.Height}} {
			if wh.v != 0 && (wh.v < 16 || wh.v > 8192) {
				d.errorf(k(wh.f), "%d is not 0 (source default) or 16..8192", wh.v)
			}
		}
		if cam.CaptureFPS < 0 || cam.CaptureFPS > 1000 {
			d.errorf(k("capture_fps"), "%g is not in 0..1000 (0 = source default)", cam.CaptureFPS)
		}
		if cam.MaxFPS < 0 || cam.MaxFPS > 1000 {
			d.errorf(k("max_fps"), "%g is not in 0..1000 (0 = no limit)", cam.MaxFPS)
		}
		for _, f := range []struct {
			f string
			v time.Duration
		}{{"stall_timeout", cam.StallTimeout}, {"open_timeout", cam.OpenTimeout}, {"backoff_min", cam.BackoffMin}, {"backoff_max", cam.BackoffMax}} {
			d.positive(k(f.f), f.v)
		}
		if d.defined[k("backoff_min")] && d.defined[k("backoff_max")] && cam.BackoffMax < cam.BackoffMin {
			d.errorf(k("backoff_max"), "%q is below backoff_min %q", cam.BackoffMax.String(), cam.BackoffMin.String())
		}
		// frozen_timeout = "0s" (or negative) switches frozen detection
		// off; capture.Config keeps that as a negative value.
		if d.defined[k("frozen_timeout")] && cam.FrozenTimeout == 0 {
			cam.FrozenTimeout = -1
		}
		*cam = cam.WithDefaults()
	}
	if enabled == 0 {
		d.errorf("", "every camera is disabled: at least one must have enabled = true")
	}
}

// ---- the effective configuration ----

// Effective returns the configuration in effect (defaults applied, paths
// absolute) as TOML. Secrets never appear: they live in files whose paths
// are shown, and passwords inside URLs are masked.
func (c *Config) Effective() ([]byte, error) {
	cp := *c
	cp.Cameras = slices.Clone(c.Cameras)
	for i := range cp.Cameras {
		cp.Cameras[i].URI = redact(cp.Cameras[i].URI)
	}
	cp.MQTT.Broker = redact(cp.MQTT.Broker)
	var b bytes.Buffer
	b.WriteString("# yolo7d effective configuration: defaults applied, relative paths resolved.\n")
	b.WriteString("# Secrets are not shown (files are named by path; URL passwords are masked).\n\n")
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(cp); err != nil {
		return nil, fmt.Errorf("config: encode effective configuration: %w", err)
	}
	return b.Bytes(), nil
}

// redact masks the password of every "scheme://user:password@" in s.
func redact(s string) string {
	return userinfoRE.ReplaceAllString(s, "${1}:xxxxx@")
}

// redactErr is err's message with the secret-bearing raw string masked.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if r := redact(raw); r != raw {
		msg = strings.ReplaceAll(msg, raw, r)
		msg = redact(msg)
	}
	return msg
}

// ---- keys and their lines ----

// joinKey appends one key part, quoted when it is not a bare TOML key.
func joinKey(prefix, part string) string {
	if !isBareKey(part) {
		part = strconv.Quote(part)
	}
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}

func indexKey(prefix string, i int) string { return prefix + "[" + strconv.Itoa(i) + "]" }

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// parentKey strips the last ".part" or "[i]" of a key ("" at the top).
func parentKey(k string) string {
	cut, inQuote := 0, false
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && (c == '.' || c == '['):
			cut = i
		}
	}
	return k[:cut]
}

// keyLines maps every key defined in a TOML document, in the notation of
// ConfigError.Key ("camera[1].name"), to the line that defines it; tables
// map to their header line. Keys inside inline tables are not listed (their
// parent is). It never fails: it is run on documents the TOML parser has
// accepted, and on anything else returns what it could find.
func keyLines(data []byte) map[string]int {
	s := &scanner{src: data, line: 1}
	lines := make(map[string]int)
	arrays := make(map[string]int) // array-of-tables key -> elements so far
	set := func(k string, line int) {
		if _, ok := lines[k]; !ok {
			lines[k] = line
		}
	}
	resolve := func(parts []string) string {
		k := ""
		for _, p := range parts {
			k = joinKey(k, p)
			if n := arrays[k]; n > 0 {
				k = indexKey(k, n-1)
			}
		}
		return k
	}
	table := ""
	for {
		s.skipBlank()
		if s.eof() {
			return lines
		}
		line := s.line
		if s.peek() == '[' {
			s.pos++
			array := s.peek() == '['
			if array {
				s.pos++
			}
			parts := s.key()
			s.skipLine()
			if len(parts) == 0 {
				continue
			}
			if array {
				k := joinKey(resolve(parts[:len(parts)-1]), parts[len(parts)-1])
				n := arrays[k]
				arrays[k] = n + 1
				table = indexKey(k, n)
			} else {
				table = resolve(parts)
			}
			set(table, line)
			continue
		}
		parts := s.key()
		s.skipSpaces()
		if len(parts) == 0 || s.peek() != '=' {
			s.skipLine()
			continue
		}
		s.pos++
		k := table
		for _, p := range parts {
			k = joinKey(k, p)
			set(k, line)
		}
		s.skipValue()
	}
}

// scanner is a forgiving TOML tokenizer that knows just enough (comments,
// strings, brackets) to find keys and count lines.
type scanner struct {
	src  []byte
	pos  int
	line int
}

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *scanner) skipSpaces() {
	for !s.eof() && (s.src[s.pos] == ' ' || s.src[s.pos] == '\t') {
		s.pos++
	}
}

// skipBlank skips white space, newlines and comments.
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.src[s.pos] {
		case ' ', '\t', '\r':
			s.pos++
		case '\n':
			s.line++
			s.pos++
		case '#':
			s.skipComment()
		default:
			return
		}
	}
}

func (s *scanner) skipComment() {
	for !s.eof() && s.src[s.pos] != '\n' {
		s.pos++
	}
}

// skipLine moves past the next newline.
func (s *scanner) skipLine() {
	for !s.eof() {
		c := s.src[s.pos]
		s.pos++
		if c == '\n' {
			s.line++
			return
		}
	}
}

// key reads a possibly dotted key and returns its parts.
func (s *scanner) key() []string {
	var parts []string
	for {
		s.skipSpaces()
		switch c := s.peek(); c {
		case '"', '\'':
			start := s.pos
			s.skipString(c)
			raw := string(s.src[start:s.pos])
			if c == '"' {
				if u, err := strconv.Unquote(raw); err == nil {
					parts = append(parts, u)
					break
				}
			}
			parts = append(parts, strings.Trim(raw, string(c)))
		default:
			start := s.pos
			for !s.eof() && isBareChar(s.src[s.pos]) {
				s.pos++
			}
			if s.pos == start {
				return parts
			}
			parts = append(parts, string(s.src[start:s.pos]))
		}
		s.skipSpaces()
		if s.peek() != '.' {
			return parts
		}
		s.pos++
	}
}

// skipValue moves to the end of a value: the first newline outside strings
// and brackets.
func (s *scanner) skipValue() {
	depth := 0
	for !s.eof() {
		switch c := s.src[s.pos]; c {
		case '\n':
			if depth == 0 {
				return
			}
			s.line++
			s.pos++
		case '#':
			s.skipComment()
		case '"', '\'':
			s.skipString(c)
		case '[', '{':
			depth++
			s.pos++
		case ']', '}':
			if depth > 0 {
				depth--
			}
			s.pos++
		default:
			s.pos++
		}
	}
}

// skipString moves past a string starting at s.pos with quote q: basic or
// literal, single-line or multi-line.
func (s *scanner) skipString(q byte) {
	triple := string([]byte{q, q, q})
	if bytes.HasPrefix(s.src[s.pos:], []byte(triple)) {
		s.pos += 3
		for !s.eof() {
			switch c := s.src[s.pos]; {
			case c == '\\' && q == '"':
				s.pos++
				if !s.eof() {
					if s.src[s.pos] == '\n' {
						s.line++
					}
					s.pos++
				}
			case c == '\n':
				s.line++
				s.pos++
			case bytes.HasPrefix(s.src[s.pos:], []byte(triple)):
				s.pos += 3
				for i := 0; i < 2 && s.peek() == q; i++ { // """a""""" ends with quotes
					s.pos++
				}
				return
			default:
				s.pos++
			}
		}
		return
	}
	s.pos++
	for !s.eof() {
		switch c := s.src[s.pos]; {
		case c == '\n':
			return
		case c == '\\' && q == '"':
			s.pos += 2
		case c == q:
			s.pos++
			return
		default:
			s.pos++
		}
	}
	if s.pos > len(s.src) {
		s.pos = len(s.src)
	}
}

// editDistance is the Levenshtein distance of a and b (for "did you mean").
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
