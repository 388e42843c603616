-- The lab's radio carriage of NAS (crates/elements/src/s1link.rs): an
-- Ethernet frame on the radio wire, EtherType 0x88B5 (IEEE 802 Local
-- Experimental 1), whose payload is the NAS PDU. Wireshark has no built-in
-- dissector for that EtherType; this one hands the payload to nas-eps.
--   tshark -X lua_script:scripts/wireshark/d11-radio-nas.lua -r radio.pcapng
--   wireshark -X lua_script:scripts/wireshark/d11-radio-nas.lua radio.pcapng
local radio = Proto("d11radio", "d11 radio carriage of NAS")
local nas = Dissector.get("nas-eps")
function radio.dissector(buf, pinfo, tree)
  tree:add(radio, buf(), "d11 radio: NAS in EtherType 0x88B5")
  nas:call(buf, pinfo, tree)
end
DissectorTable.get("ethertype"):add(0x88b5, radio)
