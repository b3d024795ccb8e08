package publish

import (
	"strings"
)

// Topics builds the topic names of the MQTT contract under one prefix
// (by default "yolo7d/<device_id>"). The zero value is not useful; use
// NewTopics.
type Topics struct {
	prefix string
}

// NewTopics returns the topic tree rooted at prefix. Trailing slashes are
// removed.
func NewTopics(prefix string) Topics {
	return Topics{prefix: strings.TrimRight(prefix, "/")}
}

// Prefix returns the prefix the topics are built from.
func (t Topics) Prefix() string { return t.prefix }

// Availability is "<p>/availability": retained "online"/"offline" (the last
// will). It is the one topic whose payload is a bare string.
func (t Topics) Availability() string { return t.prefix + "/availability" }

// Detections is "<p>/cameras/<cam>/detections" (DetectionsPayload).
func (t Topics) Detections(cam string) string { return t.camera(cam) + "/detections" }

// State is "<p>/cameras/<cam>/state", retained (StatePayload).
func (t Topics) State(cam string) string { return t.camera(cam) + "/state" }

// Snapshot is "<p>/cameras/<cam>/snapshot", retained. Its payload is a raw
// JPEG, the one exception to JSON payloads; see SnapshotMeta.
func (t Topics) Snapshot(cam string) string { return t.camera(cam) + "/snapshot" }

// SnapshotMeta is "<p>/cameras/<cam>/snapshot/meta", retained
// (SnapshotMetaPayload): the version, sequence number, time and frame of the
// JPEG last published on Snapshot(cam), so consumers can order snapshots.
func (t Topics) SnapshotMeta(cam string) string { return t.Snapshot(cam) + "/meta" }

// Stats is "<p>/stats", retained (StatsPayload).
func (t Topics) Stats() string { return t.prefix + "/stats" }

// Command is "<p>/cmd/<name>", where commands arrive.
func (t Topics) Command(name string) string { return t.prefix + "/cmd/" + name }

// Commands is the subscription filter "<p>/cmd/+".
func (t Topics) Commands() string { return t.prefix + "/cmd/+" }

// CommandResult is "<p>/cmd/result" (CommandResultPayload). It matches the
// Commands filter, so the publisher ignores what arrives on it.
func (t Topics) CommandResult() string { return t.Command(resultName) }

// FinetuneStatus is "<p>/finetune/status", retained (the agent's FinetuneStatusPayload).
func (t Topics) FinetuneStatus() string { return t.prefix + "/finetune/status" }

// commandName returns the last level of a topic under "<p>/cmd/", or false
// when topic is not one.
func (t Topics) commandName(topic string) (string, bool) {
	name, ok := strings.CutPrefix(topic, t.prefix+"/cmd/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

func (t Topics) camera(cam string) string { return t.prefix + "/cameras/" + cam }

// resultName is the reserved last level of CommandResult.
const resultName = "result"

// ValidName reports whether s can be used as a camera name in a topic:
// 1 to 64 characters of [A-Za-z0-9._-]. Names outside this set could contain
// the MQTT wildcards "+" and "#" or a level separator.
func ValidName(s string) bool {
	return validChars(s, 64, false)
}

// validChars reports whether s is 1..max characters of [A-Za-z0-9._-],
// plus ':' when colon is set.
func validChars(s string, max int, colon bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-':
		case c == ':' && colon:
		default:
			return false
		}
	}
	return true
}
