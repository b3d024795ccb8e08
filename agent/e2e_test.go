package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"github.com/yolo7d/yolo7d/tiny"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := tinytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var generatedModel struct {
	once sync.Once
	path string
	err  error
}

// testModel is the golden official ReLU export when ../shared/golden is
// present, else a seeded random YOLOv7-tiny written by tiny (same graph,
// random weights). Both run through the real OpenCV DNN backend.
func testModel(t *testing.T) string {
	t.Helper()
	golden := filepath.Join(repoRoot(t), "..", "shared", "golden", "forward", "yolov7-tiny-relu-raw.onnx")
	if _, err := os.Stat(golden); err == nil {
		return golden
	}
	generatedModel.once.Do(func() {
		dir, err := os.MkdirTemp("", "yolo7d-model")
		if err != nil {
			generatedModel.err = err
			return
		}
		generatedModel.path = filepath.Join(dir, "yolov7-tiny-relu-320.onnx")
		generatedModel.err = tiny.WriteRandomONNX(generatedModel.path, tiny.Config{Act: "relu", NC: 80, Seed: 1}, 320)
	})
	if generatedModel.err != nil {
		t.Fatalf("generate test model: %v", generatedModel.err)
	}
	return generatedModel.path
}

// agentBinary builds cmd/yolo7d once per test run.
var agentBinary struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

func buildAgent(t *testing.T) string {
	t.Helper()
	agentBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "yolo7d-bin")
		if err != nil {
			agentBinary.err = err
			return
		}
		agentBinary.path = filepath.Join(dir, "yolo7d")
		cmd := exec.Command("go", "build", "-o", agentBinary.path, "./cmd/yolo7d")
		cmd.Dir = repoRoot(t)
		agentBinary.out, agentBinary.err = cmd.CombinedOutput()
	})
	if agentBinary.err != nil {
		t.Fatalf("build yolo7d: %v\n%s", agentBinary.err, agentBinary.out)
	}
	return agentBinary.path
}

// testConfig is a configuration for one test: the broker, a prefix unique
// to the test, and the given camera tables.
type testConfig struct {
	Broker   string
	StateDir string
	Model    string
	Cameras  string // [[camera]] tables
	Extra    string // more TOML appended at the end
	MQTT     string // more keys of [mqtt]
}

func (c testConfig) write(t *testing.T, dir string) string {
	t.Helper()
	text := fmt.Sprintf(`[agent]
device_id = "test"
state_dir = %q
log_level = "debug"

[detector]
model = %q
backend = "opencv"
conf_threshold = 0.01
input_size = %d

[mqtt]
broker = %q
prefix = "t/%s"
stats_interval = "1s"
qos = 1
%s

%s
%s
`, c.StateDir, c.Model, inputSizeOf(c.Model), c.Broker, sanitizeTestName(t.Name()), c.MQTT, c.Cameras, c.Extra)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func inputSizeOf(model string) int {
	if strings.Contains(filepath.Base(model), "-320") {
		return 320
	}
	return 640
}

func sanitizeTestName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

func prefixFor(t *testing.T) string { return "t/" + sanitizeTestName(t.Name()) }

// detectionsMsg is the detections payload as a consumer decodes it.
type detectionsMsg struct {
	V          int     `json:"v"`
	Seq        uint64  `json:"seq"`
	TS         string  `json:"ts"`
	Device     string  `json:"device"`
	Camera     string  `json:"camera"`
	Frame      uint64  `json:"frame"`
	Width      int     `json:"width"`
	Height     int     `json:"height"`
	Model      string  `json:"model"`
	InferMS    float64 `json:"infer_ms"`
	Detections []struct {
		Class   string  `json:"class"`
		ClassID int     `json:"class_id"`
		Score   float64 `json:"score"`
		Box     struct {
			X1, Y1, X2, Y2 float64
		} `json:"box"`
		BoxNorm []float64 `json:"box_norm"`
	} `json:"detections"`
}

type stateMsg struct {
	V         int     `json:"v"`
	State     string  `json:"state"`
	FPS       float64 `json:"fps"`
	LastError string  `json:"last_error"`
}

func checkDetections(t *testing.T, raw []byte, camera string, w, h int) detectionsMsg {
	t.Helper()
	var d detectionsMsg
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("detections payload does not match the schema: %v\n%s", err, raw)
	}
	if d.V != 1 || d.Seq == 0 || d.Device != "test" || d.Camera != camera || d.Frame == 0 ||
		d.Width != w || d.Height != h || len(d.Model) != 64 || d.InferMS <= 0 {
		t.Fatalf("bad detections header: %+v", d)
	}
	if _, err := time.Parse(time.RFC3339Nano, d.TS); err != nil {
		t.Fatalf("ts %q is not RFC 3339: %v", d.TS, err)
	}
	for _, x := range d.Detections {
		if x.Class == "" || x.ClassID < 0 || x.ClassID >= 80 || x.Score <= 0 || x.Score > 1 ||
			x.Box.X1 < 0 || x.Box.Y1 < 0 || x.Box.X2 > float64(w) || x.Box.Y2 > float64(h) ||
			x.Box.X2 < x.Box.X1 || x.Box.Y2 < x.Box.Y1 || len(x.BoxNorm) != 4 {
			t.Fatalf("bad detection: %+v", x)
		}
	}
	return d
}

// TestAgentPublishesDetectionsFromVideoOverMosquitto runs the agent in
// process on an ffmpeg video through the OpenCV engine against a real
// mosquitto, and checks the payload schema, availability and state.
func TestAgentPublishesDetectionsFromVideoOverMosquitto(t *testing.T) {
	broker := startMosquitto(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 3)
	cfgPath := testConfig{
		Broker:   broker.URL(),
		StateDir: filepath.Join(dir, "state"),
		Model:    testModel(t),
		Cameras:  fileCamera("cam1", video, 10),
		MQTT:     "home_assistant = true\ndiscovery_prefix = \"ha-" + sanitizeTestName(t.Name()) + "\"\n",
	}.write(t, dir)
	sub := subscribe(t, broker.URL(), prefixFor(t)+"/#")
	ha := subscribe(t, broker.URL(), "ha-"+sanitizeTestName(t.Name())+"/#")

	_, stop := runAgent(t, cfgPath)

	waitFor(t, 30*time.Second, "5 detection messages", func() bool { return len(sub.on("/cameras/cam1/detections")) >= 5 })
	var withBoxes int
	var lastSeq uint64
	for _, m := range sub.on("/cameras/cam1/detections") {
		d := checkDetections(t, m.Payload, "cam1", 320, 240)
		if d.Seq <= lastSeq {
			t.Errorf("detections seq went from %d to %d", lastSeq, d.Seq)
		}
		lastSeq = d.Seq
		if len(d.Detections) > 0 {
			withBoxes++
		}
	}
	if withBoxes == 0 {
		t.Errorf("no message carried a detection at conf 0.01")
	}
	waitFor(t, 10*time.Second, "availability online", func() bool {
		ms := sub.on("/availability")
		return len(ms) > 0 && string(ms[len(ms)-1].Payload) == "online"
	})
	var st stateMsg
	waitFor(t, 10*time.Second, "state streaming", func() bool { return sub.lastJSON(t, "/cameras/cam1/state", &st) && st.State == "streaming" })
	waitFor(t, 10*time.Second, "stats", func() bool { return len(sub.on("/stats")) > 0 })
	waitFor(t, 10*time.Second, "Home Assistant discovery", func() bool { return len(ha.on("/config")) >= 5 })
	for _, m := range ha.on("/config") {
		var e map[string]any
		if err := json.Unmarshal(m.Payload, &e); err != nil || e["unique_id"] == nil || e["availability_topic"] != prefixFor(t)+"/availability" {
			t.Errorf("discovery %s: %v %s", m.Topic, err, m.Payload)
		}
	}
	var stats map[string]any
	sub.lastJSON(t, "/stats", &stats)
	if stats["v"] != float64(1) || stats["cameras"] == nil {
		t.Errorf("stats payload lacks v or cameras: %v", stats)
	}

	// Commands: a snapshot, and refusals with reasons.
	p := prefixFor(t)
	cmds := []struct {
		topic, payload string
		ok             bool
		errHas         string
	}{
		{p + "/cmd/snapshot", `{"id":"s1","camera":"cam1"}`, true, ""},
		{p + "/cmd/snapshot", `{"id":"s2","camera":"nosuch"}`, false, "not running"},
		{p + "/cmd/snapshot", `{"id":"s3","camera":"cam1","extra":1}`, false, "extra"},
		{p + "/cmd/reload", `{"id":"r1","epochs":"x"}`, false, "epochs"},
		{p + "/cmd/finetune", `{"id":"f1","data":"../../etc/passwd"}`, false, "data"},
		{p + "/cmd/finetune", `{"id":"f2","data":"set/data.yaml"}`, false, "no such file"},
		{p + "/cmd/explode", `{"id":"x1"}`, false, "explode"},
	}
	for _, c := range cmds {
		if tok := sub.client.Publish(c.topic, 1, false, c.payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", c.topic, tok.Error())
		}
	}
	type result struct {
		V     int    `json:"v"`
		ID    string `json:"id"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	results := func() map[string]result {
		m := map[string]result{}
		for _, msg := range sub.on("/cmd/result") {
			var r result
			if json.Unmarshal(msg.Payload, &r) == nil {
				m[r.ID] = r
			}
		}
		return m
	}
	waitFor(t, 15*time.Second, "a result for every command", func() bool { return len(results()) >= len(cmds) })
	got := results()
	for _, c := range cmds {
		var id struct{ ID string }
		json.Unmarshal([]byte(c.payload), &id)
		r := got[id.ID]
		if r.V != 1 || r.OK != c.ok || !strings.Contains(r.Error, c.errHas) {
			t.Errorf("command %s %s: result %+v, want ok=%v and an error containing %q", c.topic, c.payload, r, c.ok, c.errHas)
		}
	}
	snaps := sub.on("/cameras/cam1/snapshot")
	if len(snaps) == 0 || !bytes.HasPrefix(snaps[0].Payload, []byte{0xFF, 0xD8}) {
		t.Errorf("no JPEG on the snapshot topic (%d messages)", len(snaps))
	}
	late := subscribe(t, broker.URL(), p+"/cameras/cam1/snapshot")
	waitFor(t, 5*time.Second, "the retained snapshot for a late subscriber", func() bool {
		ms := late.on("/cameras/cam1/snapshot")
		return len(ms) > 0 && ms[0].Retained && bytes.HasPrefix(ms[0].Payload, []byte{0xFF, 0xD8})
	})

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	waitFor(t, 5*time.Second, "availability offline after a clean stop", func() bool {
		ms := sub.on("/availability")
		return len(ms) > 0 && string(ms[len(ms)-1].Payload) == "offline"
	})
}

// TestAgentBinaryLastWillOnKillAndGracefulSIGTERM runs the real binary:
// SIGKILL makes the broker publish the retained "offline" last will, and
// SIGTERM shuts down gracefully with "offline" published by the agent.
func TestAgentBinaryLastWillOnKillAndGracefulSIGTERM(t *testing.T) {
	broker := startMosquitto(t)
	bin := buildAgent(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 2)
	cfgPath := testConfig{
		Broker:   broker.URL(),
		StateDir: filepath.Join(dir, "state"),
		Model:    testModel(t),
		Cameras:  fileCamera("cam1", video, 5),
	}.write(t, dir)
	sub := subscribe(t, broker.URL(), prefixFor(t)+"/availability")
	lastAvail := func() string {
		ms := sub.on("/availability")
		if len(ms) == 0 {
			return ""
		}
		return string(ms[len(ms)-1].Payload)
	}

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		cmd := exec.Command(bin, "run", "--config", cfgPath)
		cmd.Stderr = newTestLog(t)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "online", func() bool { return lastAvail() == "online" })
		_ = cmd.Process.Signal(sig)
		err := cmd.Wait()
		waitFor(t, 15*time.Second, fmt.Sprintf("offline after %v", sig), func() bool { return lastAvail() == "offline" })
		if sig == syscall.SIGTERM && err != nil {
			t.Errorf("graceful SIGTERM exit: %v", err)
		}
	}
	// A fresh subscriber sees the retained value.
	late := subscribe(t, broker.URL(), prefixFor(t)+"/availability")
	waitFor(t, 5*time.Second, "retained offline", func() bool {
		ms := late.on("/availability")
		return len(ms) > 0 && ms[0].Retained && string(ms[0].Payload) == "offline"
	})
}

// testLog sends log output to t.Log until the test ends (late writes from
// background goroutines are dropped instead of panicking).
type testLog struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestLog(t *testing.T) *testLog {
	w := &testLog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return w
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
