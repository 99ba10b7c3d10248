//! Translating decisions into each proxy's own terms (Kamailio rtjson, OpenSIPS JSON).
