// probeinterface JSON loading: the real NP1000.json and error paths.
#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>

#include "twinloop/drivers/probeinterface.hpp"

namespace twinloop::drivers {
namespace {

const std::filesystem::path kNp1000 =
    std::filesystem::path(TWINLOOP_SHARED_DATA) / "probes" / "NP1000.json";

std::string error_of(const std::string& text) {
  try {
    (void)parse_probeinterface(text, "probe.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(ProbeInterface, Np1000HasAllContactsAndAgreesWithBuiltIn) {
  const ProbeGeometry g = load_probeinterface(kNp1000);
  EXPECT_EQ(g.model, "NP1000");
  ASSERT_EQ(g.channel_count(), 960u);
  const ProbeGeometry np1 = neuropixels1_geometry();
  for (std::size_t i = 0; i < 384; ++i) {
    EXPECT_DOUBLE_EQ(g.sites[i].x_um, np1.sites[i].x_um) << i;
    EXPECT_DOUBLE_EQ(g.sites[i].z_um, np1.sites[i].z_um) << i;
    EXPECT_EQ(g.sites[i].electrode, np1.sites[i].electrode) << i;
    EXPECT_EQ(g.sites[i].shank, 0);
  }
  EXPECT_EQ(g.sites[959].electrode, 959);
  EXPECT_DOUBLE_EQ(g.sites[959].z_um, 20.0 * 479);
  const ProbeGeometry full = neuropixels1_geometry(960);
  EXPECT_DOUBLE_EQ(g.sites[959].x_um, full.sites[959].x_um);
}

TEST(ProbeInterface, DeviceChannelIndicesSelectAndOrder) {
  const std::string text = R"({"specification":"probeinterface","version":"0.3.2","probes":[{
    "ndim":2,"si_units":"um","annotations":{"model_name":"toy"},
    "contact_positions":[[0,0],[10,0],[0,20],[10,20]],
    "contact_ids":["e0","e1","e2","e3"],
    "shank_ids":["0","0","1","1"],
    "device_channel_indices":[2,-1,0,1]}]})";
  const ProbeGeometry g = parse_probeinterface(text, "toy.json");
  EXPECT_EQ(g.model, "toy");
  ASSERT_EQ(g.channel_count(), 3u);
  EXPECT_EQ(g.sites[0].electrode, 2);  // device channel 0 is contact 2
  EXPECT_EQ(g.sites[0].shank, 1);
  EXPECT_EQ(g.sites[1].electrode, 3);
  EXPECT_EQ(g.sites[2].electrode, 0);
  EXPECT_DOUBLE_EQ(g.sites[1].x_um, 10.0);
  EXPECT_DOUBLE_EQ(g.sites[1].z_um, 20.0);
}

TEST(ProbeInterfaceErrors, MalformedJsonNamesLine) {
  const std::string message = error_of("{\n\"probes\": [\n  {,}\n]}");
  EXPECT_EQ(message.rfind("probe.json:3:", 0), 0u) << message;
  EXPECT_NE(message.find("malformed JSON"), std::string::npos) << message;
}

TEST(ProbeInterfaceErrors, MissingKeys) {
  EXPECT_NE(error_of(R"({"specification":"probeinterface"})").find("missing key 'probes'"),
            std::string::npos);
  EXPECT_NE(
      error_of(R"({"probes":[{"ndim":2}]})").find("probes[0]: missing key 'contact_positions'"),
      std::string::npos);
  EXPECT_NE(error_of(R"({"probes":[{"contact_positions":[[0,"a"]]}]})").find("expected a number"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"probes":[]})").find("probe 0 requested"), std::string::npos);
  EXPECT_NE(
      error_of(R"({"probes":[{"contact_positions":[[0,0],[1,1]],"device_channel_indices":[0,0]}]})")
          .find("device channel 0 wired to contacts 0 and 1"),
      std::string::npos);
}

TEST(ProbeInterfaceErrors, MissingFileNamesPath) {
  try {
    (void)load_probeinterface("/nonexistent/probe.json");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/probe.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace twinloop::drivers
