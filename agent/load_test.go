package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture"
)

// base is a valid configuration; bad cases append to it or replace it.
const base = `[detector]
model = "m.onnx"

[[camera]]
name = "a"
uri = "v4l2://0"
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		key  string // full key in the message
		line int
		msg  string
	}{
		{"unknown key", base + "bogus = 1\n", "camera[0].bogus", 7, "unknown key"},
		{"unknown key suggestion", base + "stall_timout = \"1s\"\n", "camera[0].stall_timout", 7, `did you mean "stall_timeout"`},
		{"unknown table", "[agnet]\nx = 1\n" + base, "agnet", 1, "unknown key"},
		{"wrong type", "[mqtt]\nqos = \"1\"\n" + base, "mqtt.qos", 2, "want an integer, got a string"},
		{"wrong type table", "agent = 3\n" + base, "agent", 1, "want a table"},
		{"camera as table", "[detector]\nmodel = \"m\"\n\n[camera]\nname = \"a\"\n", "camera", 4, "array of tables"},
		{"missing source", "[detector]\nmodel = \"m\"\n\n[[camera]]\nname = \"a\"\n\n[[camera]]\nname = \"b\"\n", "camera[1]", 7, "uri is required"},
		{"bad uri", base + "\n[[camera]]\nname = \"b\"\nuri = \"ftp://x/y\"\n", "camera[1].uri", 10, "unknown scheme"},
		{"bad duration", base + "\n[[camera]]\nname = \"b\"\nuri = \"csi://0\"\n\nstall_timeout = \"10x\"\n", "camera[1].stall_timeout", 12, `invalid duration "10x"`},
		{"integer duration", "[mqtt]\nkeepalive = 30\n" + base, "mqtt.keepalive", 2, "duration string"},
		{"negative duration", base + "open_timeout = \"-1s\"\n", "camera[0].open_timeout", 7, "greater than 0"},
		{"duplicate camera", base + "[[camera]]\nname = \"a\"\nuri = \"csi://1\"\n", "camera[1].name", 8, `duplicate camera name "a" (also camera[0].name, line 5)`},
		{"bad camera name", base + "[[camera]]\nname = \"Front Door\"\nuri = \"csi://1\"\n", "camera[1].name", 8, "not a valid camera name"},
		{"qos 2", "[mqtt]\n\nqos = 2\n" + base, "mqtt.qos", 3, "not 0 or 1"},
		{"qos out of range", "[mqtt]\nqos = 300\n" + base, "mqtt.qos", 2, "out of range"},
		{"inline password", "[mqtt]\nusername = \"u\"\npassword = \"hunter2\"\n" + base, "mqtt.password", 3, "use password_file"},
		{"loop on v4l2", base + "loop = true\n", "camera[0].loop", 7, "file:// sources only"},
		{"width", base + "width = 8\n", "camera[0].width", 7, "16..8192"},
		{"max_fps", base + "max_fps = -1.0\n", "camera[0].max_fps", 7, "0..1000"},
		{"threshold", "[detector]\nmodel = \"m\"\nconf_threshold = 1.0\n[[camera]]\nname = \"a\"\nuri = \"csi://0\"\n", "detector.conf_threshold", 3, "not in (0, 1)"},
		{"input size", "[detector]\nmodel = \"m\"\ninput_size = 600\n[[camera]]\nname = \"a\"\nuri = \"csi://0\"\n", "detector.input_size", 3, "multiple of 32"},
		{"backend", "[detector]\nmodel = \"m\"\nbackend = \"cuda\"\n[[camera]]\nname = \"a\"\nuri = \"csi://0\"\n", "detector.backend", 3, "not one of auto, cpu"},
		{"class not named", "[detector]\nmodel = \"m\"\nclass_names = [\"a\"]\nclasses = [\n  \"b\",\n]\n[[camera]]\nname = \"a\"\nuri = \"csi://0\"\n", "detector.classes[0]", 4, `"b" is not in detector.class_names`},
		{"broker scheme", "[mqtt]\nbroker = \"http://x:1883\"\n" + base, "mqtt.broker", 2, "scheme tcp, ssl"},
		{"broker host", "[mqtt]\nbroker = \"tcp://:1883\"\n" + base, "mqtt.broker", 2, "no host"},
		{"broker password", "[mqtt]\nbroker = \"tcp://u:hunter2@x:1883\"\n" + base, "mqtt.broker", 2, "password_file"},
		{"prefix wildcard", "[mqtt]\nprefix = \"a/+/b\"\n" + base, "mqtt.prefix", 2, "wildcard"},
		{"prefix slash", "[mqtt]\nprefix = \"a/b/\"\n" + base, "mqtt.prefix", 2, "start or end with '/'"},
		{"log level", "[agent]\nlog_level = \"verbose\"\n" + base, "agent.log_level", 2, "not one of debug, info, warn, error"},
		{"device id", "[agent]\ndevice_id = \"my box\"\n" + base, "agent.device_id", 2, "not a valid device id"},
		{"missing password file", "[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n" + base, "mqtt.password_file", 3, "no such file"},
		{"cert without key", "[mqtt]\nbroker = \"ssl://x:8883\"\ncert_file = \"load_test.go\"\n" + base, "mqtt.cert_file", 3, "go together"},
		{"dotted key", "mqtt.qos = 5\n" + base, "mqtt.qos", 1, "not 0 or 1"},
		{"inline table key", "mqtt = { qos = 5 }\n" + base, "mqtt.qos", 1, "not 0 or 1"},
		{"after multiline string", "[agent]\ndevice_id = \"\"\"\nx\ny\"\"\"\nlog_format = 'xml'\n" + base, "agent.log_format", 5, "not one of text, json"},
		{"quoted key", "[mqtt]\n\"bad key\" = 1\n" + base, `mqtt."bad key"`, 2, "unknown key"},
		{"subtable of camera", base + "\n[[camera]]\nname = \"b\"\nuri = \"csi://0\"\n[camera.extra]\nx = 1\n", "camera[1].extra", 11, "unknown key"},
		{"syntax", "[mqtt]\nqos = = 1\n" + base, "", 2, "syntax error"},
		{"no camera", "[detector]\nmodel = \"m\"\n", "", 0, "no camera"},
		{"finetune unknown key", "[finetune]\nepoch = 3\n" + base, "finetune.epoch", 2, `did you mean "epochs"`},
		{"finetune epochs", "[finetune]\nepochs = 0\n" + base, "finetune.epochs", 2, "not in 1..1000"},
		{"finetune epochs type", "[finetune]\nepochs = \"10\"\n" + base, "finetune.epochs", 2, "want an integer"},
		{"finetune img", "[finetune]\n\nimg = 100\n" + base, "finetune.img", 3, "multiple of 32"},
		{"finetune batch", "[finetune]\nbatch = 257\n" + base, "finetune.batch", 2, "not in 1..256"},
		{"finetune freeze", "[finetune]\nfreeze = 78\n" + base, "finetune.freeze", 2, "not in 0..77"},
		{"finetune aux", "[finetune]\naux = 1\n" + base, "finetune.aux", 2, "want true or false"},
		{"finetune margin", "[finetune]\nmargin = 2.0\n" + base, "finetune.margin", 2, "not in -1..1"},
		{"finetune margin nan", "[finetune]\nmargin = nan\n" + base, "finetune.margin", 2, "not in -1..1"},
		{"finetune replay ext", "[finetune]\nreplay = \"load_test.go\"\n" + base, "finetune.replay", 2, "not a .yaml"},
		{"finetune replay missing", "[finetune]\nreplay = \"/nonexistent/data.yaml\"\n" + base, "finetune.replay", 2, "no such file"},
		{"finetune max_replay_drop", "[finetune]\nmax_replay_drop = -0.1\n" + base, "finetune.max_replay_drop", 2, "not in 0..1"},
		{"finetune replay_mix", "[finetune]\nreplay_mix = 0.95\n" + base, "finetune.replay_mix", 2, "fraction in [0, 0.9)"},
		{"finetune replay_mix alone", "[finetune]\nreplay_mix = 0.3\n" + base, "finetune.replay_mix", 2, "needs replay"},
		{"finetune strict", "[finetune]\nstrict = \"yes\"\n" + base, "finetune.strict", 2, "want true or false"},
		{"finetune bn", "[finetune]\nbn = \"train\"\n" + base, "finetune.bn", 2, "not one of frozen, batch"},
		{"finetune threads", "[finetune]\nthreads = 0\n" + base, "finetune.threads", 2, "not in 1..1024"},
		{"finetune mode", "[finetune]\nmode = \"stop\"\n" + base, "finetune.mode", 2, "not one of share, pause"},
		{"finetune seed", "[finetune]\nseed = -1\n" + base, "finetune.seed", 2, "out of range"},
		{"all disabled", base + "enabled = false\n", "", 0, "every camera is disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			want := "test.toml: "
			if tt.line > 0 {
				want += fmt.Sprintf("line %d: ", tt.line)
			}
			if tt.key != "" {
				want += tt.key + ": "
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error lacks %q:\n%v", tt.msg, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error reveals a password:\n%v", err)
			}
		})
	}
}

// TestParseReportsAll checks that every problem is reported, in file order.
func TestParseReportsAll(t *testing.T) {
	doc := `[agent]
log_level = 3
[mqtt]
qos = 2
nope = true
[[camera]]
name = "x"
stall_timeout = "soon"
[[camera]]
name = "x"
uri = "csi://0"
enabled = false
`
	_, err := Parse([]byte(doc), "all.toml")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		"all.toml: line 2: agent.log_level: want a string, got an integer",
		"all.toml: line 4: mqtt.qos: 2 is not 0 or 1",
		"all.toml: line 5: mqtt.nope: unknown key",
		"all.toml: line 6: camera[0]: uri is required",
		"all.toml: line 8: camera[0].stall_timeout: invalid duration",
		"all.toml: line 10: camera[1].name: duplicate camera name",
		"all.toml: detector.model: is required",
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 2 || ce.Key != "agent.log_level" {
		t.Errorf("errors.As(*ConfigError) = %+v", ce)
	}
}

func TestParseDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg, warns, err := LoadWithWarnings(filepath.Join("testdata", "config", "minimal.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %q", warns)
	}
	_ = dir
	host, _ := os.Hostname()
	id := SanitizeDeviceID(host)
	abs, _ := filepath.Abs(filepath.Join("testdata", "config"))
	want := &Config{
		Agent: Settings{DeviceID: id, StateDir: DefaultStateDir, LogLevel: "info", LogFormat: "text"},
		Snapshots: SnapshotSettings{
			MinInterval: 10 * time.Second, Quality: 85,
		},
	}
	want.Finetune = FinetuneSettings{Epochs: 30, Batch: 8, Aux: true, Margin: 0.005, MaxReplayDrop: 0.02,
		BN: "frozen", Threads: DefaultFinetuneThreads(), Mode: "share", Device: "cpu"}
	want.Detector.Model = filepath.Join(abs, "m.onnx")
	want.Detector.Backend, want.Detector.InputSize = "auto", 640
	want.Detector.ConfThreshold, want.Detector.IoUThreshold, want.Detector.MaxDetections = 0.25, 0.45, 300
	want.Detector.Precision, want.Detector.TRTCacheDir = "fp32", filepath.Join(DefaultStateDir, "tensorrt")
	want.MQTT.Broker, want.MQTT.EmbeddedListen = "embedded", "127.0.0.1:1883"
	want.MQTT.Prefix, want.MQTT.ClientID = "yolo7d/"+id, "yolo7d-"+id
	want.MQTT.KeepAlive, want.MQTT.ConnectTimeout = 30*time.Second, 10*time.Second
	want.MQTT.QoS, want.MQTT.QueueSize, want.MQTT.OutboxMaxBytes = 1, 1000, 64<<20
	want.MQTT.StatsInterval = 30 * time.Second
	want.MQTT.StateDir = DefaultStateDir
	want.MQTT.DiscoveryPrefix = "homeassistant"
	want.Cameras = []capture.Config{{
		Name: "c", URI: "v4l2://0", Enabled: true,
		StallTimeout: 10 * time.Second, FrozenTimeout: 30 * time.Second, OpenTimeout: 15 * time.Second,
		BackoffMin: 500 * time.Millisecond, BackoffMax: 30 * time.Second,
	}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\ngot  %+v\nwant %+v", cfg, want)
	}
}

func TestGoodConfigRoundTrip(t *testing.T) {
	path := filepath.Join("testdata", "config", "good.toml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	checks := []struct {
		name      string
		got, want any
	}{
		{"state_dir", cfg.Agent.StateDir, filepath.Join(dir, "state")},
		{"model", cfg.Detector.Model, filepath.Join(dir, "models/best.onnx")},
		{"file uri", cfg.Cameras[1].URI, "file://" + filepath.Join(dir, "videos") + "/clip%20one.mp4"},
		{"qos 0 kept", cfg.MQTT.QoS, byte(0)},
		{"frozen off", cfg.Cameras[0].FrozenTimeout < 0, true},
		{"stall", cfg.Cameras[0].StallTimeout, 5 * time.Second},
		{"disabled", cfg.Cameras[2].Enabled, false},
		{"enabled default", cfg.Cameras[0].Enabled, true},
		{"keepalive", cfg.MQTT.KeepAlive, time.Minute},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	u, err := capture.ParseURI(cfg.Cameras[1].URI)
	if err != nil || u.Path != filepath.Join(dir, "videos", "clip one.mp4") {
		t.Errorf("ParseURI(%q) = %+v, %v", cfg.Cameras[1].URI, u, err)
	}

	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out, path)
	if err != nil {
		t.Fatalf("the effective configuration does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(again, cfg) {
		t.Errorf("round trip differs:\nfirst  %+v\nsecond %+v\n%s", cfg, again, out)
	}
}

func TestEffectiveHidesSecrets(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf(`[detector]
model = "m"
[mqtt]
username = "u"
password_file = %q
[[camera]]
name = "a"
uri = "rtsp://viewer:hunter2@cam:554/s"
[[camera]]
name = "b"
uri = "gst://rtspsrc location=rtsp://v:hunter2@cam/s ! decodebin ! appsink"
`, pw)
	cfg, warns, err := ParseWithWarnings([]byte(doc), filepath.Join(dir, "c.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings for a 0600 password file: %q", warns)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("effective configuration reveals a password:\n%s", out)
	}
	for _, w := range []string{`password_file = "` + pw + `"`, "rtsp://viewer:xxxxx@cam:554/s", "rtsp://v:xxxxx@cam/s"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("effective configuration lacks %q:\n%s", w, out)
		}
	}
	if cfg.Cameras[0].URI != "rtsp://viewer:hunter2@cam:554/s" {
		t.Errorf("Effective modified the configuration: %q", cfg.Cameras[0].URI)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private := write("private", 0o600)
	shared := write("shared", 0o644)
	tests := []struct {
		name     string
		mqtt     string
		wantErr  string
		wantWarn string
	}{
		{"private", `username = "u"` + "\npassword_file = \"private\"", "", ""},
		{"group readable", `username = "u"` + "\npassword_file = \"shared\"", "", "line 5: mqtt.password_file: " + shared + " is accessible by group or others (mode 0644)"},
		{"key file", "broker = \"mqtts://b\"\ncert_file = \"private\"\nkey_file = \"shared\"", "", "line 6: mqtt.key_file"},
		{"ca not secret", "broker = \"mqtts://b\"\nca_file = \"shared\"", "", ""},
		{"directory", `username = "u"` + "\npassword_file = \".\"", "line 5: mqtt.password_file: " + dir + " is a directory", ""},
		{"missing", "broker = \"ssl://b\"\nca_file = \"nope.pem\"", "line 5: mqtt.ca_file: open " + filepath.Join(dir, "nope.pem"), ""},
		{"tls on tcp", "broker = \"tcp://b\"\nca_file = \"private\"", "", "line 5: mqtt.ca_file: ignored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[detector]\nmodel = \"m\"\n[mqtt]\n" + tt.mqtt + "\n[[camera]]\nname = \"a\"\nuri = \"csi://0\"\n"
			cfg, warns, err := ParseWithWarnings([]byte(doc), filepath.Join(dir, "c.toml"))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			joined := strings.Join(warns, "\n")
			if tt.wantWarn == "" && joined != "" {
				t.Errorf("unexpected warnings: %s", joined)
			}
			if tt.wantWarn != "" && !strings.Contains(joined, tt.wantWarn) {
				t.Errorf("warnings %q lack %q", joined, tt.wantWarn)
			}
			if err == nil && tt.name == "private" && cfg.MQTT.PasswordFile != private {
				t.Errorf("password_file = %q, want %q", cfg.MQTT.PasswordFile, private)
			}
		})
	}
}

// TestShippedConfig loads the repository's config.toml: it must be valid and
// be what `make run` expects.
func TestShippedConfig(t *testing.T) {
	cfg, warns, err := LoadWithWarnings("../config.toml")
	if err != nil {
		t.Fatalf("config.toml: %v", err)
	}
	if len(warns) != 0 {
		t.Errorf("config.toml warnings: %q", warns)
	}
	root, _ := filepath.Abs("..")
	if cfg.Agent.DeviceID != "demo" || cfg.Agent.StateDir != filepath.Join(root, "build/state") {
		t.Errorf("agent = %+v", cfg.Agent)
	}
	if cfg.MQTT.Broker != "embedded" || cfg.MQTT.EmbeddedListen != "127.0.0.1:1883" {
		t.Errorf("mqtt = %+v", cfg.MQTT)
	}
	if cfg.Detector.Model != filepath.Join(root, "build/models/demo.safetensors") {
		t.Errorf("detector.model = %q", cfg.Detector.Model)
	}
	if len(cfg.Cameras) != 1 {
		t.Fatalf("%d cameras, want 1", len(cfg.Cameras))
	}
	c := cfg.Cameras[0]
	if c.Name != "demo" || c.URI != "file://"+filepath.Join(root, "build/demo.mp4") || !c.Loop || c.MaxFPS != 5 || !c.Enabled {
		t.Errorf("camera = %+v", c)
	}
}

// TestShippedConfigDocumentsEveryKey checks that config.toml mentions every
// key of every table, set or commented out.
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../config.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, v := range []any{Settings{}, SnapshotSettings{}, FinetuneSettings{}, capture.Config{}, Config{}.Detector, Config{}.MQTT} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name := tomlName(rt.Field(i))
			if name == "" {
				continue
			}
			if !strings.Contains(text, "\n"+name+" = ") && !strings.Contains(text, "\n#"+name+" = ") {
				t.Errorf("config.toml does not document %s.%s", rt.Name(), name)
			}
		}
	}
}

func TestKeyLines(t *testing.T) {
	doc := `# comment [not = a table]
top = 1
a.b = "x # not a comment"
[t]
s = """
line
 [fake]
k = 1
"""
lit = '''
[also fake]'''
arr = [
  1, # [x]
  2,
]
'quoted.key' = 2
[[cam]]
name = "a"
[cam.sub]
x = 1
[[cam]]
  name = "b" # comment
[[cam.zone]]
p = 1
[[cam.zone]]
p = 2
"after" = { inline = 1 }
`
	want := map[string]int{
		"top": 2, "a": 3, "a.b": 3, "t": 4, "t.s": 5, "t.lit": 10, "t.arr": 12,
		`t."quoted.key"`: 16, "cam[0]": 17, "cam[0].name": 18, "cam[0].sub": 19,
		"cam[0].sub.x": 20, "cam[1]": 21, "cam[1].name": 22, "cam[1].zone[0]": 23,
		"cam[1].zone[0].p": 24, "cam[1].zone[1]": 25, "cam[1].zone[1].p": 26,
		"cam[1].zone[1].after": 27,
	}
	got := keyLines([]byte(doc))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keyLines:\ngot  %v\nwant %v", got, want)
	}
}

func TestParentKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a", ""}, {"a.b", "a"}, {"camera[1]", "camera"}, {"camera[1].uri", "camera[1]"},
		{`mqtt."a.b"`, "mqtt"}, {`"x[1]".y`, `"x[1]"`}, {"d.classes[0]", "d.classes"},
	}
	for _, tt := range tests {
		if got := parentKey(tt.in); got != tt.want {
			t.Errorf("parentKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeDeviceID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"jetson-nano", "jetson-nano"},
		{"Jetson.local", "jetson"},
		{"My Box_2", "my-box_2"},
		{"", "yolo7d"},
		{"...", "yolo7d"},
		{"ünï", "n"},
		{strings.Repeat("a", 70), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := SanitizeDeviceID(tt.in); got != tt.want {
			t.Errorf("SanitizeDeviceID(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !deviceIDRE.MatchString(SanitizeDeviceID(tt.in)) {
			t.Errorf("SanitizeDeviceID(%q) is not a valid device id", tt.in)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("Load(missing) = %v", err)
	}
}

// TestParseFinetuneTable: every [finetune] key is read; replay is resolved
// relative to the file; the table survives the effective round trip.
func TestParseFinetuneTable(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "replay.yaml"), []byte("val: x\n"), 0o644)
	text := `[finetune]
epochs = 5
img = 320
batch = 4
freeze = 10
aux = false
margin = 0.0
replay = "replay.yaml"
max_replay_drop = 0.05
bn = "batch"
threads = 2
mode = "pause"
seed = 7
` + base
	path := filepath.Join(dir, "c.toml")
	cfg, err := Parse([]byte(text), path)
	if err != nil {
		t.Fatal(err)
	}
	want := FinetuneSettings{Epochs: 5, Img: 320, Batch: 4, Freeze: 10, Aux: false, Margin: 0, Replay: filepath.Join(dir, "replay.yaml"),
		MaxReplayDrop: 0.05, BN: "batch", Threads: 2, Mode: "pause", Device: "cpu", Seed: 7}
	if cfg.Finetune != want {
		t.Errorf("finetune = %+v\nwant %+v", cfg.Finetune, want)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out, path)
	if err != nil {
		t.Fatalf("effective configuration does not parse: %v\n%s", err, out)
	}
	if again.Finetune != want {
		t.Errorf("round trip: %+v", again.Finetune)
	}
}
