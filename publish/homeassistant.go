package publish

import (
	"encoding/json"
	"fmt"
	"strings"
)

// DefaultDiscoveryPrefix is Home Assistant's default discovery prefix.
const DefaultDiscoveryPrefix = "homeassistant"

// Discovery is one Home Assistant MQTT discovery message: a retained config
// on <discovery_prefix>/<component>/<node>/<object>/config.
type Discovery struct {
	Topic   string
	Payload []byte
}

// haDevice is the "device" block shared by every entity of the agent.
type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Manufacturer string   `json:"manufacturer"`
	Model        string   `json:"model"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

// haEntity holds the discovery fields yolo7d uses; empty ones are omitted.
type haEntity struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	ObjectID            string   `json:"object_id"`
	Device              haDevice `json:"device"`
	AvailabilityTopic   string   `json:"availability_topic"`
	PayloadAvailable    string   `json:"payload_available"`
	PayloadNotAvailable string   `json:"payload_not_available"`
	StateTopic          string   `json:"state_topic,omitempty"`
	ValueTemplate       string   `json:"value_template,omitempty"`
	JSONAttributesTopic string   `json:"json_attributes_topic,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	Icon                string   `json:"icon,omitempty"`
	EntityCategory      string   `json:"entity_category,omitempty"`
	ImageTopic          string   `json:"image_topic,omitempty"`
	ContentType         string   `json:"content_type,omitempty"`
	CommandTopic        string   `json:"command_topic,omitempty"`
	PayloadPress        string   `json:"payload_press,omitempty"`
}

// DiscoveryMessages returns the Home Assistant discovery configs of an
// agent: per camera, the number of objects in the last frame (with the
// detections as attributes), the camera state, the latest snapshot as an
// image, and a button that asks for a snapshot; for the agent, a reload
// button. Every entity uses the agent's availability topic.
func DiscoveryMessages(discoveryPrefix string, t Topics, device, version string, cameras []string) ([]Discovery, error) {
	if discoveryPrefix == "" {
		discoveryPrefix = DefaultDiscoveryPrefix
	}
	node := "yolo7d_" + haID(device)
	dev := haDevice{
		Identifiers:  []string{node},
		Name:         "yolo7d " + device,
		Manufacturer: "yolo7d",
		Model:        "YOLOv7-tiny detection agent",
		SWVersion:    version,
	}
	base := func(name, object string) haEntity {
		return haEntity{
			Name:                name,
			UniqueID:            node + "_" + object,
			ObjectID:            node + "_" + object,
			Device:              dev,
			AvailabilityTopic:   t.Availability(),
			PayloadAvailable:    "online",
			PayloadNotAvailable: "offline",
		}
	}
	var out []Discovery
	add := func(component, object string, e haEntity) error {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("discovery %s/%s: %w", component, object, err)
		}
		out = append(out, Discovery{Topic: fmt.Sprintf("%s/%s/%s/%s/config", discoveryPrefix, component, node, object), Payload: b})
		return nil
	}
	reload := base("Reload configuration", "reload")
	reload.CommandTopic = t.Command("reload")
	reload.PayloadPress = `{"id":"homeassistant"}`
	reload.EntityCategory = "config"
	if err := add("button", "reload", reload); err != nil {
		return nil, err
	}
	for _, cam := range cameras {
		id := haID(cam)
		objects := base(cam+" objects", id+"_objects")
		objects.StateTopic = t.Detections(cam)
		objects.ValueTemplate = "{{ value_json.detections | length }}"
		objects.JSONAttributesTopic = t.Detections(cam)
		objects.UnitOfMeasurement = "objects"
		objects.StateClass = "measurement"
		objects.Icon = "mdi:cctv"
		state := base(cam+" state", id+"_state")
		state.StateTopic = t.State(cam)
		state.ValueTemplate = "{{ value_json.state }}"
		state.JSONAttributesTopic = t.State(cam)
		state.EntityCategory = "diagnostic"
		image := base(cam+" snapshot", id+"_snapshot")
		image.ImageTopic = t.Snapshot(cam)
		image.ContentType = "image/jpeg"
		snap := base(cam+" take snapshot", id+"_take_snapshot")
		snap.CommandTopic = t.Command("snapshot")
		snap.PayloadPress = fmt.Sprintf(`{"id":"homeassistant","camera":%q}`, cam)
		for _, e := range []struct {
			component, object string
			entity            haEntity
		}{
			{"sensor", id + "_objects", objects},
			{"sensor", id + "_state", state},
			{"image", id + "_snapshot", image},
			{"button", id + "_take_snapshot", snap},
		} {
			if err := add(e.component, e.object, e.entity); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// PublishDiscovery publishes the Home Assistant discovery configs of the
// given cameras (retained, QoS 1) when the configuration enables it.
func (p *Publisher) PublishDiscovery(version string, cameras []string) error {
	if !p.cfg.HomeAssistant {
		return nil
	}
	msgs, err := DiscoveryMessages(p.cfg.DiscoveryPrefix, p.topics, p.device, version, cameras)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := p.PublishRaw(m.Topic, 1, true, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

// ClearDiscovery removes the discovery configs of cameras that are gone
// (an empty retained payload deletes a retained message and, in Home
// Assistant, the entity).
func (p *Publisher) ClearDiscovery(cameras []string) error {
	if !p.cfg.HomeAssistant || len(cameras) == 0 {
		return nil
	}
	msgs, err := DiscoveryMessages(p.cfg.DiscoveryPrefix, p.topics, p.device, "", cameras)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if strings.Contains(m.Topic, "/button/") && strings.HasSuffix(m.Topic, "_reload/config") {
			continue // the agent's own entity stays
		}
		if err := p.PublishRaw(m.Topic, 1, true, []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// haID turns a name into the characters Home Assistant accepts in ids.
func haID(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, s)
}
