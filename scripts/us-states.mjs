// Turns us-atlas' states (already projected: Albers USA, 975 x 610) into
// {"viewBox": ..., "states": {"US-CA": "<svg path>", ...}} keyed by ISO 3166-2 code.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.env.NODE_PATH + '/');
const { feature } = require('topojson-client');
const { geoPath } = require('d3-geo');

const codes = {
  'Alabama': 'AL', 'Alaska': 'AK', 'Arizona': 'AZ', 'Arkansas': 'AR', 'California': 'CA', 'Colorado': 'CO',
  'Connecticut': 'CT', 'Delaware': 'DE', 'District of Columbia': 'DC', 'Florida': 'FL', 'Georgia': 'GA',
  'Hawaii': 'HI', 'Idaho': 'ID', 'Illinois': 'IL', 'Indiana': 'IN', 'Iowa': 'IA', 'Kansas': 'KS',
  'Kentucky': 'KY', 'Louisiana': 'LA', 'Maine': 'ME', 'Maryland': 'MD', 'Massachusetts': 'MA',
  'Michigan': 'MI', 'Minnesota': 'MN', 'Mississippi': 'MS', 'Missouri': 'MO', 'Montana': 'MT',
  'Nebraska': 'NE', 'Nevada': 'NV', 'New Hampshire': 'NH', 'New Jersey': 'NJ', 'New Mexico': 'NM',
  'New York': 'NY', 'North Carolina': 'NC', 'North Dakota': 'ND', 'Ohio': 'OH', 'Oklahoma': 'OK',
  'Oregon': 'OR', 'Pennsylvania': 'PA', 'Rhode Island': 'RI', 'South Carolina': 'SC', 'South Dakota': 'SD',
  'Tennessee': 'TN', 'Texas': 'TX', 'Utah': 'UT', 'Vermont': 'VT', 'Virginia': 'VA', 'Washington': 'WA',
  'West Virginia': 'WV', 'Wisconsin': 'WI', 'Wyoming': 'WY',
};
const topology = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const path = geoPath().digits(1);
const states = {};
for (const state of feature(topology, topology.objects.states).features) {
  const code = codes[state.properties.name];
  if (code) states['US-' + code] = path(state);
}
const missing = Object.values(codes).filter((code) => !states['US-' + code]);
if (missing.length) throw new Error('no shape for ' + missing.join(', '));
const source = 'us-atlas 3.0.1 states-albers-10m (U.S. Census Bureau cartographic boundary files, public domain)';
process.stdout.write(JSON.stringify({ source, viewBox: '0 0 975 610', states }) + '\n');
