// /test: the device test on its own.
import { DeviceTest } from './devicetest.js';

const root = document.getElementById('device-test');
if (root) new DeviceTest(root).start();
