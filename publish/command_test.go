package publish

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

const dataDir = "/var/lib/yolo7d/data"

func TestParseCommandAcceptsValidCommands(t *testing.T) {
	cases := []struct {
		name, payload string
		want          Command
	}{
		{"reload", `{"id":"r-1"}`, Command{Name: "reload", ID: "r-1", Finetune: FinetuneArgs{}}},
		{"rollback", ` {"id":"a.b:c_d-9"} `, Command{Name: "rollback", ID: "a.b:c_d-9"}},
		{"snapshot", `{"id":"s1","camera":"front-door"}`, Command{Name: "snapshot", ID: "s1", Camera: "front-door"}},
		{"finetune", `{"id":"f1","data":"sets/yard/data.yaml"}`, Command{Name: "finetune", ID: "f1",
			Finetune: FinetuneArgs{Data: filepath.Join(dataDir, "sets/yard/data.yaml"), Freeze: -1}}},
		{"finetune", `{"id":"f2","data":"d.yml","base":"models/a.safetensors","epochs":1000,"img":640,"batch":16,"freeze":0,"aux":true,"resume":false}`,
			Command{Name: "finetune", ID: "f2", Finetune: FinetuneArgs{Data: filepath.Join(dataDir, "d.yml"),
				Base: filepath.Join(dataDir, "models/a.safetensors"), Epochs: 1000, Img: 640, Batch: 16, Freeze: 0, Aux: true, AuxSet: true}}},
		{"finetune", `{"id":"f4","data":"d.yaml","aux":false}`, Command{Name: "finetune", ID: "f4",
			Finetune: FinetuneArgs{Data: filepath.Join(dataDir, "d.yaml"), Freeze: -1, AuxSet: true}}},
		{"finetune", `{"id":"c1","cancel":true}`, Command{Name: "finetune", ID: "c1", Finetune: FinetuneArgs{Cancel: true}}},
		{"finetune", `{"id":"c2","cancel":false,"data":"d.yaml"}`, Command{Name: "finetune", ID: "c2",
			Finetune: FinetuneArgs{Data: filepath.Join(dataDir, "d.yaml"), Freeze: -1}}},
		{"finetune", `{"id":"f3","data":"a/../b/data.yaml"}`, Command{Name: "finetune", ID: "f3",
			Finetune: FinetuneArgs{Data: filepath.Join(dataDir, "b/data.yaml"), Freeze: -1}}},
		{"capture", `{"id":"k1","camera":"yard","dataset":"sets/yard"}`, Command{Name: "capture", ID: "k1", Camera: "yard",
			Capture: CaptureArgs{Dir: filepath.Join(dataDir, "sets/yard"), Split: "train", Count: 10, Interval: time.Second, Labels: true}}},
		{"capture", `{"id":"k2","camera":"yard","dataset":"y","split":"val","count":3,"interval":"250ms","labels":false}`,
			Command{Name: "capture", ID: "k2", Camera: "yard", Capture: CaptureArgs{Dir: filepath.Join(dataDir, "y"), Split: "val", Count: 3, Interval: 250 * time.Millisecond}}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" "+tc.payload, func(t *testing.T) {
			got, err := ParseCommand(tc.name, []byte(tc.payload), dataDir)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseCommandRefusesBadCommandsNamingTheField(t *testing.T) {
	long := strings.Repeat("a", 65)
	cases := []struct {
		name, payload string
		field         string // the field the error must name; "" for the payload as a whole
		reason        string // a part of the reason
		id            string // the id that must still be read for the reply
	}{
		{"capture", `{"id":"k","dataset":"d"}`, "camera", "required", "k"},
		{"capture", `{"id":"k","camera":"a/b","dataset":"d"}`, "camera", "1 to 64", "k"},
		{"capture", `{"id":"k","camera":"c"}`, "dataset", "required", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"../etc"}`, "dataset", "escapes", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"/etc"}`, "dataset", "absolute", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","split":"test"}`, "split", "train or val", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","count":0}`, "count", "out of range", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","count":100000}`, "count", "out of range", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","interval":"forever"}`, "interval", "duration", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","interval":"2h"}`, "interval", "0s..1h", "k"},
		{"capture", `{"id":"k","camera":"c","dataset":"d","labels":1}`, "labels", "", "k"},
		{"reload", `[]`, "", "JSON object", ""},
		{"reload", `"x"`, "", "JSON object", ""},
		{"reload", ``, "", "invalid JSON", ""},
		{"reload", `{"id":"a"`, "", "invalid JSON", "a"},
		{"reload", `{"id":"a"} {}`, "", "trailing data", "a"},
		{"reload", `{"id":"a"}x`, "", "", "a"},
		{"reload", "{\"id\":\"a\xff\"}", "", "UTF-8", ""},
		{"reload", `{}`, "id", "required", ""},
		{"reload", `{"id":""}`, "id", "1 to 64", ""},
		{"reload", `{"id":"` + long + `"}`, "id", "1 to 64", ""},
		{"reload", `{"id":"a b"}`, "id", "1 to 64", ""},
		{"reload", `{"id":"a/#"}`, "id", "1 to 64", ""},
		{"reload", `{"id":7}`, "id", "want a string", ""},
		{"reload", `{"id":null}`, "id", "null", ""},
		{"reload", `{"id":"a","id":"b"}`, "id", "twice", "a"},
		{"reload", `{"id":"a","force":true}`, "force", "unknown field", "a"},
		{"reload", `{"id":"a","x":{"y":1}}`, "x", "unknown field", "a"},
		{"explode", `{"id":"a"}`, "", "unknown command", "a"},
		{"result", `{"id":"a"}`, "", "unknown command", "a"},
		{"snapshot", `{"id":"a"}`, "camera", "required", "a"},
		{"snapshot", `{"id":"a","camera":"../x"}`, "camera", "A-Za-z0-9", "a"},
		{"snapshot", `{"id":"a","camera":"cam+"}`, "camera", "A-Za-z0-9", "a"},
		{"snapshot", `{"id":"a","camera":["c"]}`, "camera", "want a string", "a"},
		{"finetune", `{"id":"a"}`, "data", "required", "a"},
		{"finetune", `{"id":"a","data":""}`, "data", "empty", "a"},
		{"finetune", `{"id":"a","data":"/etc/data.yaml"}`, "data", "absolute", "a"},
		{"finetune", `{"id":"a","data":"../data.yaml"}`, "data", "escapes", "a"},
		{"finetune", `{"id":"a","data":"x/../../data.yaml"}`, "data", "escapes", "a"},
		{"finetune", `{"id":"a","data":"x\u0000.yaml"}`, "data", "NUL", "a"},
		{"finetune", `{"id":"a","data":"shadow"}`, "data", ".yaml", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","base":"/root/m.pt"}`, "base", "absolute", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","base":"../../m.pt"}`, "base", "escapes", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","epochs":0}`, "epochs", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","epochs":1001}`, "epochs", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","epochs":1e12}`, "epochs", "want an integer", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","epochs":2.5}`, "epochs", "want an integer", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","epochs":"10"}`, "epochs", "want an integer", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","img":16}`, "img", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","img":1312}`, "img", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","img":100}`, "img", "multiple of 32", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","batch":0}`, "batch", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","batch":257}`, "batch", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","freeze":-1}`, "freeze", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","freeze":78}`, "freeze", "out of range", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","aux":"yes"}`, "aux", "want a boolean", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","resume":1}`, "resume", "want a boolean", "a"},
		{"finetune", `{"id":"a","data":"d.yaml","lr":0.1}`, "lr", "unknown field", "a"},
		{"finetune", `{"id":"a","cancel":true,"data":"d.yaml"}`, "data", "not allowed with", "a"},
		{"finetune", `{"id":"a","cancel":true,"epochs":3}`, "epochs", "not allowed with", "a"},
		{"finetune", `{"id":"a","resume":false,"cancel":true}`, "resume", "not allowed with", "a"},
		{"finetune", `{"id":"a","cancel":"yes"}`, "cancel", "want a boolean", "a"},
		{"finetune", `{"cancel":true}`, "id", "required", ""},
		{"finetune", `{"id":"a","cancel":false}`, "data", "required", "a"},
		{"reload", `{"id":"a","pad":"` + strings.Repeat("x", MaxCommandSize) + `"}`, "", "exceeds", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name+" "+tail(tc.payload, 60), func(t *testing.T) {
			cmd, err := ParseCommand(tc.name, []byte(tc.payload), dataDir)
			var ce *CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want a *CommandError", err, err)
			}
			if ce.Field != tc.field || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("error %q (field %q), want field %q and a reason with %q", err, ce.Field, tc.field, tc.reason)
			}
			if tc.field != "" && !strings.Contains(err.Error(), `"`+tc.field+`"`) {
				t.Fatalf("error %q does not name the field", err)
			}
			if cmd.ID != tc.id {
				t.Fatalf("id for the reply = %q, want %q", cmd.ID, tc.id)
			}
		})
	}
}

func TestParseCommandRefusesFinetuneWithoutDataDir(t *testing.T) {
	_, err := ParseCommand(CmdFinetune, []byte(`{"id":"a","data":"d.yaml"}`), "")
	if err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{`{"id":"a"}`, `{"id":"a","camera":"c"}`,
		`{"id":"f","data":"d.yaml","base":"m.pt","epochs":10,"img":640,"batch":8,"freeze":3,"aux":true,"resume":false}`,
		`{"id":"a","id":"b"}`, `{"id":"a"} x`, `[1,2]`, `{"data":"../../etc/x.yaml","id":"z"}`,
		`{"id":"k","camera":"c","dataset":"d","split":"val","count":5,"interval":"1s","labels":true}`} {
		for _, name := range []string{CmdReload, CmdSnapshot, CmdFinetune, CmdRollback, CmdCapture, "x"} {
			f.Add(name, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		cmd, err := ParseCommand(name, payload, dataDir)
		if cmd.ID != "" && !validID(cmd.ID) {
			t.Fatalf("invalid id %q returned", cmd.ID)
		}
		if err != nil {
			var ce *CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if !validID(cmd.ID) || cmd.Name != name {
			t.Fatalf("accepted %+v", cmd)
		}
		if !json.Valid(payload) {
			t.Fatalf("accepted invalid JSON %q", payload)
		}
		for _, p := range []string{cmd.Finetune.Data, cmd.Finetune.Base} {
			if p != "" && !strings.HasPrefix(p, dataDir+"/") {
				t.Fatalf("path %q outside %s", p, dataDir)
			}
		}
		if name == CmdSnapshot && !ValidName(cmd.Camera) {
			t.Fatalf("camera %q", cmd.Camera)
		}
	})
}

func TestCommandsOverMQTTAreAnsweredOnTheResultTopic(t *testing.T) {
	b, err := StartEmbeddedBroker("127.0.0.1:0", testLogger(t))
	must(t, err)
	t.Cleanup(func() { b.Close() })
	handled := make(chan Command, 1)
	p := startPublisher(t, testConfig(t, b.URL()), Options{DataDir: dataDir,
		OnCommand: func(ctx context.Context, cmd Command) (any, error) {
			handled <- cmd
			return map[string]string{"camera": cmd.Camera}, nil
		}})
	topics := p.Topics()
	sub := subscribe(t, b.URL(), "sub-cmd", topics.CommandResult(), false)
	waitFor(t, 10*time.Second, "publisher connected", p.Connected)

	sender := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("cmd-sender"))
	if tok := sender.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sender.Disconnect(100)

	results := func() []CommandResultPayload {
		var out []CommandResultPayload
		for _, m := range sub.messages() {
			var r CommandResultPayload
			must(t, json.Unmarshal(m.payload, &r))
			out = append(out, r)
		}
		return out
	}
	// The subscription is made in OnConnect; wait until it holds by
	// retrying a bad command until its reply comes back.
	waitFor(t, 10*time.Second, "reply to a bad command", func() bool {
		sender.Publish(topics.Command(CmdFinetune), 1, false, `{"id":"bad-1","data":"/etc/passwd"}`).Wait()
		time.Sleep(50 * time.Millisecond)
		return len(results()) > 0
	})
	r := results()[0]
	if r.OK || r.ID != "bad-1" || r.Command != CmdFinetune || !strings.Contains(r.Error, `"data"`) || r.V != SchemaVersion || r.Seq == 0 {
		t.Fatalf("reply %+v", r)
	}
	select {
	case cmd := <-handled:
		t.Fatalf("handler called for a refused command: %+v", cmd)
	default:
	}

	sender.Publish(topics.Command(CmdSnapshot), 1, false, `{"id":"good-1","camera":"yard"}`).Wait()
	select {
	case cmd := <-handled:
		if cmd.Camera != "yard" || cmd.ID != "good-1" {
			t.Fatalf("handled %+v", cmd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	waitFor(t, 10*time.Second, "reply to the good command", func() bool {
		for _, r := range results() {
			if r.ID == "good-1" {
				if !r.OK || r.Error != "" || r.Result.(map[string]any)["camera"] != "yard" {
					t.Fatalf("reply %+v", r)
				}
				return true
			}
		}
		return false
	})
}
