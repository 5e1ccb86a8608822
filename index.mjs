// ES module entry: the same objects as the CommonJS entry.
import gateway from './index.js';

export const { WhatsAppGateway, GatewayError, ERROR_CODES, SERVER_MESSAGE_TYPES, EXTENSION_MESSAGE_TYPES } = gateway;
export default gateway;
