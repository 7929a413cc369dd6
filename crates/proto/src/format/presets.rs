//! The built-in formats, as TOML a user can copy into `[formats.NAME]` and
//! edit (`wsingest formats show NAME`). Each is built from the vendor's
//! published payload shapes; `tests.rs` runs them on such payloads.

use super::{FormatConfig, FormatError};

/// Name and TOML of each preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("flat", include_str!("presets/flat.toml")),
    ("owntracks", include_str!("presets/owntracks.toml")),
    ("shelly", include_str!("presets/shelly.toml")),
    ("tasmota", include_str!("presets/tasmota.toml")),
    ("ttn", include_str!("presets/ttn.toml")),
];

/// The TOML of preset `name`.
pub fn toml_of(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The config of preset `name`.
pub fn config(name: &str) -> Result<FormatConfig, FormatError> {
    let text = toml_of(name).ok_or_else(|| FormatError::Preset {
        name: name.into(),
        detail: "no such preset".into(),
    })?;
    toml::from_str(text).map_err(|e| FormatError::Preset {
        name: name.into(),
        detail: e.to_string(),
    })
}

/// Payloads in the shapes the vendors document, one or more per preset: the
/// tests run the presets on them, and they show what each preset expects.
pub mod samples {
    /// Shelly Gen2 NotifyStatus (docs: shelly-api-docs.shelly.cloud/gen2/General/Notifications).
    pub const SHELLY_NOTIFY_STATUS: &str = r#"{"src":"shellyplus1pm-441793d69718","dst":"wsingest","method":"NotifyStatus","params":{"ts":1732543391.52,"switch:0":{"id":0,"apower":12.5,"voltage":231.4,"current":0.071,"aenergy":{"total":1234.567,"by_minute":[210.5,208.1,209.9],"minute_ts":1732543380},"temperature":{"tC":41.2,"tF":106.2}}}}"#;

    /// NotifyFullStatus of a Shelly Plus H&T (sys, wifi, empty ble, sensors).
    pub const SHELLY_FULL_STATUS: &str = r#"{"src":"shellyplusht-08b61fcb7f3c","dst":"wsingest","method":"NotifyFullStatus","params":{"ts":1732543400.00,"ble":{},"cloud":{"connected":false},"devicepower:0":{"id":0,"battery":{"V":5.48,"percent":83},"external":{"present":false}},"humidity:0":{"id":0,"rh":48.7},"temperature:0":{"id":0,"tC":21.8,"tF":71.2},"sys":{"mac":"08B61FCB7F3C","restart_required":false,"time":null,"unixtime":null,"uptime":2,"ram_size":246464,"ram_free":161440,"fs_size":458752,"fs_free":114688,"cfg_rev":9,"available_updates":{},"wakeup_reason":{"boot":"deepsleep_wake","cause":"periodic"},"wakeup_period":7200},"wifi":{"sta_ip":"192.168.1.40","status":"got ip","ssid":"Wohnung ü","rssi":-61},"ws":{"connected":true}}}"#;

    /// Tasmota tele/<topic>/SENSOR of a Sonoff POW R2 and a BME280 (docs: tasmota.github.io/docs/JSON-Status-Responses).
    pub const TASMOTA_SENSOR: &str = r#"{"Time":"2024-11-25T14:03:11","ENERGY":{"TotalStartTime":"2024-01-10T09:12:01","Total":12.345,"Yesterday":0.512,"Today":0.201,"Period":2,"Power":45,"ApparentPower":50,"ReactivePower":21,"Factor":0.9,"Voltage":231,"Current":0.216},"BME280":{"Temperature":21.3,"Humidity":45.2,"DewPoint":9.0,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}"#;

    /// Tasmota tele/<topic>/STATE.
    pub const TASMOTA_STATE: &str = r#"{"Time":"2024-11-25T14:03:11","Uptime":"0T01:00:12","UptimeSec":3612,"Heap":25,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":1,"POWER":"ON","Wifi":{"AP":1,"SSId":"home","BSSId":"AA:BB:CC:DD:EE:FF","Channel":6,"Mode":"11n","RSSI":80,"Signal":-60,"LinkCount":1,"Downtime":"0T00:00:03"}}"#;

    /// OwnTracks location (docs: owntracks.org/booklet/tech/json).
    pub const OWNTRACKS_LOCATION: &str = r#"{"_type":"location","BSSID":"b0:f2:8:45:94:33","SSID":"home","acc":13,"alt":36,"batt":80,"bs":1,"conn":"w","created_at":1732543395,"inregions":["home"],"lat":48.856826,"lon":2.292713,"m":1,"t":"u","tid":"JJ","topic":"owntracks/jane/phone","tst":1732543391,"vac":2,"vel":0}"#;

    /// A TTN v3 uplink webhook (docs: thethingsindustries.com/docs/reference/data-formats/#uplink-messages).
    pub const TTN_UPLINK: &str = r#"{"end_device_ids":{"device_id":"eui-70b3d57ed005d0d3","application_ids":{"application_id":"greenhouse"},"dev_eui":"70B3D57ED005D0D3","join_eui":"0000000000000000","dev_addr":"260B1F3C"},"correlation_ids":["as:up:01JDJ3Z5S7QW0G6X0S3B1N8TQZ","rpc:/ttn.lorawan.v3.AppAs/SimulateUplink:6a1b"],"received_at":"2024-11-25T14:03:11.123456789Z","uplink_message":{"session_key_id":"AZNJkxZ8Ojq3pSPf2tVJQA==","f_port":2,"f_cnt":317,"frm_payload":"CL4TiA==","decoded_payload":{"temperature":22.38,"humidity":50,"battery":{"voltage":3.61,"low":false},"label":"nördlich"},"rx_metadata":[{"gateway_ids":{"gateway_id":"gw-roof","eui":"B827EBFFFE61A9F1"},"time":"2024-11-25T14:03:11.010Z","timestamp":2040934975,"rssi":-87,"channel_rssi":-87,"snr":7.25,"uplink_token":"ChsKGQoNZ3ctcm9vZhII","channel_index":2,"received_at":"2024-11-25T14:03:11.050Z"},{"gateway_ids":{"gateway_id":"gw-barn"},"rssi":-112,"snr":-3.5}],"settings":{"data_rate":{"lora":{"bandwidth":125000,"spreading_factor":7,"coding_rate":"4/5"}},"frequency":"868300000","timestamp":2040934975},"received_at":"2024-11-25T14:03:11.090Z","consumed_airtime":"0.056576s","network_ids":{"net_id":"000013","tenant_id":"ttn","cluster_id":"eu1","cluster_address":"eu1.cloud.thethings.network"}}}"#;

    /// `(preset, sample)` pairs.
    pub const ALL: &[(&str, &str)] = &[
        ("shelly", SHELLY_NOTIFY_STATUS),
        ("shelly", SHELLY_FULL_STATUS),
        ("tasmota", TASMOTA_SENSOR),
        ("tasmota", TASMOTA_STATE),
        ("owntracks", OWNTRACKS_LOCATION),
        ("ttn", TTN_UPLINK),
    ];
}
