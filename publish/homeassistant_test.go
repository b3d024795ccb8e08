package publish

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDiscoveryMessagesDescribeEveryCamera(t *testing.T) {
	topics := NewTopics("yolo7d/gate")
	msgs, err := DiscoveryMessages("", topics, "gate", "1.2.3", []string{"front", "Back-Yard"})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1+2*4 {
		t.Fatalf("got %d discovery messages, want 9", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if !strings.HasPrefix(m.Topic, "homeassistant/") || !strings.HasSuffix(m.Topic, "/config") {
			t.Errorf("topic %q is not a discovery config topic", m.Topic)
		}
		var e map[string]any
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatalf("%s: %v", m.Topic, err)
		}
		id, _ := e["unique_id"].(string)
		if id == "" || seen[id] {
			t.Errorf("%s: unique_id %q empty or repeated", m.Topic, id)
		}
		seen[id] = true
		if e["availability_topic"] != "yolo7d/gate/availability" {
			t.Errorf("%s: availability_topic = %v", m.Topic, e["availability_topic"])
		}
		dev, _ := e["device"].(map[string]any)
		if ids, _ := dev["identifiers"].([]any); len(ids) != 1 || ids[0] != "yolo7d_gate" {
			t.Errorf("%s: device identifiers = %v", m.Topic, dev["identifiers"])
		}
		for _, k := range []string{"state_topic", "image_topic", "command_topic"} {
			if v, ok := e[k].(string); ok && !strings.HasPrefix(v, "yolo7d/gate/") {
				t.Errorf("%s: %s = %q outside the prefix", m.Topic, k, v)
			}
		}
	}
	for _, want := range []string{"yolo7d_gate_front_objects", "yolo7d_gate_back_yard_snapshot", "yolo7d_gate_reload"} {
		if !seen[want] {
			t.Errorf("no entity %s (have %v)", want, seen)
		}
	}
}
